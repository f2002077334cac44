"""The head on a real IBM Quantum device: ``QiskitRuntimeService`` + ``Batch`` + the runtime's
client-side ``executor_estimator.Estimator``.

The same code path runs offline in local testing mode: give ``submit`` a snapshot backend object
(or name one, ``quantum_hardware.ibm_runtime.backend: fake_<name>``) and the ``Batch`` and the
estimator run it on qiskit-aer, with the circuit on its active qubits (see :func:`build_pubs`).
Credentials come only from the user's saved account or the environment
(``QiskitRuntimeService()`` reads ``~/.qiskit/qiskit-ibm.json`` or ``QISKIT_IBM_TOKEN`` and
friends), never from ``conf/base``.

Flow: transpile for the device (the full-width ISA circuit, not the reduction used for fast
simulation), log the estimated QPU time, submit one job (every image, every ZNE fold and the
readout calibration in one estimator call, which the runtime submits as an Executor job) inside
a ``Batch``, and record the job id in ``quantum_hardware_jobs.json``. A later run with
``resume: true`` and the same circuit and images collects that job instead of submitting again
(``service.job(id).result()`` runs the estimator's client-side post-processing again).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
from typing import Any

import numpy as np

from qsight_pipeline.config.quantum_hardware import IbmRuntimeParams, QuantumHardwareParams
from qsight_pipeline.errors import ConfigError, UserError
from qsight_pipeline.hardware import devices, estimation

logger = logging.getLogger(__name__)

JOBS_FORMAT = "qsight.quantum_hardware_jobs/1"
KEY = "quantum_hardware.ibm_runtime.backend"


class RuntimeAccountError(UserError):
    """A real device was named but no IBM Quantum account is available."""


def is_snapshot(name: str) -> bool:
    return name.startswith("fake_")


def service_from_account(ibm: IbmRuntimeParams) -> Any:
    """``QiskitRuntimeService`` from the saved account / environment, or a clear error."""
    try:
        # lazy: optional dependency
        from qiskit_ibm_runtime import QiskitRuntimeService

        options = {k: v for k, v in (("channel", ibm.channel), ("instance", ibm.instance)) if v}
        return QiskitRuntimeService(**options)
    except Exception as error:  # noqa: BLE001 - AccountNotFoundError, bad token, no network
        raise RuntimeAccountError(
            f"{KEY} is {ibm.backend!r}, a real device, but no IBM Quantum account could be used "
            f"({type(error).__name__}: {error}). Save one once with "
            "`python -c \"from qiskit_ibm_runtime import QiskitRuntimeService as S; "
            "S.save_account(channel='ibm_quantum_platform', token='<API key>', "
            "instance='<CRN>')\"` or set QISKIT_IBM_TOKEN (never in conf/base), or set "
            f"{KEY}: null."
        ) from None


def resolve_backend(ibm: IbmRuntimeParams) -> tuple[Any, Any]:
    """``(backend, service)``; the service is ``None`` for a snapshot (local testing mode)."""
    if is_snapshot(ibm.backend):
        return devices.load_snapshot(ibm.backend, KEY), None
    service = service_from_account(ibm)
    try:
        return service.backend(ibm.backend), service
    except Exception as error:  # noqa: BLE001
        try:
            available = ", ".join(b.name for b in service.backends())
        except Exception:  # noqa: BLE001
            available = "(could not list them)"
        raise ConfigError(
            f"{KEY}: {ibm.backend!r} is not available to this account ({error}). "
            f"Available: {available}."
        ) from None


def _fingerprint(backend_name: str, circuits: list[Any], values: np.ndarray, shots: int) -> str:
    # lazy: optional dependency
    from qiskit import qasm3

    digest = hashlib.sha256()
    digest.update(f"{backend_name}|{shots}|".encode())
    for circuit in circuits:
        digest.update(qasm3.dumps(circuit).encode())
    digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()[:16]


def build_pubs(
    data: Any, prepared: Any, scales: list[int], readout: bool, local: bool = False
) -> tuple[list, np.ndarray]:
    """PUBs of one job: every fold, then the two calibration circuits.

    On a device: the full-width ISA circuit. In local testing mode: the same circuit renumbered
    onto its active qubits, for the snapshot's noise on them (the ``device`` rows' simulator).
    The runtime's estimator measures every qubit of the circuit it is given, so the full width
    of a 133- or 156-qubit snapshot cannot be simulated.
    """
    if local:
        circuit, observables = prepared.reduced, prepared.reduced_observables
        measured = list(prepared.measured)
    else:
        circuit, observables = prepared.isa, prepared.observables
        measured = [prepared.active[j] for j in prepared.measured]
    values = estimation.parameter_values(circuit, data.spec, data.angles, data.weights)
    pubs = estimation.device_pubs(circuit, observables, values, scales,
                                  (circuit.num_qubits, measured) if readout else None)
    return pubs, values


def submit(
    data: Any, params: QuantumHardwareParams, previous: dict[str, Any] | None = None,
    backend: Any = None, service: Any = None,
) -> tuple[dict[str, Any], Any]:
    """Submit (or find, to resume) the job of ``params.ibm_runtime``; returns ``(record, job)``.

    ``record`` is the new content of ``quantum_hardware_jobs.json`` (``current`` names the job
    of this run); ``job`` has ``.result()`` and ``.job_id()``.
    """
    # lazy: optional dependency
    from qiskit_ibm_runtime import Batch

    ibm = params.ibm_runtime
    if backend is None:
        backend, service = resolve_backend(ibm)
    name = ibm.backend or backend.name
    prepared = devices.prepare_circuit(
        data.spec, backend, name,
        optimization_level=params.optimization_level, seed_transpiler=params.seed_transpiler,
    )
    scales = list(params.zne.scale_factors) if "zne" in ibm.mitigation else [1]
    readout = "readout" in ibm.mitigation
    pubs, values = build_pubs(data, prepared, scales, readout, local=service is None)
    fingerprint = _fingerprint(name, [p[0] for p in pubs], values, ibm.shots)
    records = list((previous or {}).get("jobs", []))
    n_images = len(data.labels)
    seconds = devices.qpu_seconds_per_1000(
        prepared.stats, ibm.shots, scales,
        (params.overhead_seconds_per_circuit, params.overhead_seconds_per_job),
        images=n_images, calibration_circuits=2 if readout else 0,
    )
    match = next((r for r in records if r.get("fingerprint") == fingerprint), None)
    if match and ibm.resume and service is not None:
        logger.info("Resuming job %s on %s (submitted %s)", match["job_id"], name, match["submitted"])
        return _record(records, match["job_id"]), service.job(match["job_id"])
    logger.info(
        "Submitting %d images x %d circuit(s) at %d shots to %s: estimated QPU time %.1f s "
        "(%s)", n_images, len(scales), ibm.shots, name, seconds,
        "local testing mode, nothing is billed" if service is None else "billed to your account",
    )
    if service is None:  # local testing mode: the snapshot's noise on the active qubits
        backend = devices.simulator(devices.noise_model(prepared), prepared.reduced.num_qubits)
    with Batch(backend=backend) as batch:
        # resilience_level 0: mitigation is ours, the same as offline
        job = estimation.make_estimator(batch, ibm.shots, None).run(pubs)
    entry = {
        "backend": name, "job_id": job.job_id(), "fingerprint": fingerprint,
        "submitted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "shots": ibm.shots, "mitigation": ibm.mitigation, "scale_factors": scales,
        "n_images": n_images, "estimated_qpu_seconds": seconds,
        "local_testing_mode": service is None, "physical_qubits": prepared.stats["physical_qubits"],
    }
    records = [r for r in records if r.get("fingerprint") != fingerprint] + [entry]
    logger.info("Job %s recorded in quantum_hardware_jobs.json", entry["job_id"])
    return _record(records, entry["job_id"]), job


def _record(records: list[dict[str, Any]], current: str) -> dict[str, Any]:
    """``quantum_hardware_jobs.json``: every job recorded so far and the one this run collects."""
    return {"format": JOBS_FORMAT, "current": current, "jobs": records}


def rows_from_result(
    data: Any, result: Any, record: dict[str, Any], params: QuantumHardwareParams,
    stats: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Table rows (condition ``hardware``) from a collected job, one per mitigation it allows."""
    scales = list(record["scale_factors"])
    readout = "readout" in record["mitigation"]
    raw, calibration = estimation.raw_and_calibration(result, scales, readout)
    mitigations = ["none"] + (["zne"] if len(scales) > 1 else [])
    if readout:
        mitigations += ["readout"] + (["readout_zne"] if len(scales) > 1 else [])
    rows = []
    for mitigation in mitigations:
        z = estimation.mitigated(raw, calibration, mitigation, params.zne.extrapolation)
        rows.append({
            "condition": "hardware", "device": record["backend"], "shots": record["shots"],
            "mitigation": mitigation, "seed": None, "noise_scale": None,
            "n_images": record["n_images"], "job_id": record["job_id"], **data.metrics(z),
        })
    return rows
