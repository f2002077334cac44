"""Expectation values ``<Z_i>`` of the head's circuit through qiskit-ibm-runtime's Estimator.

The estimator is the runtime's current one, ``qiskit_ibm_runtime.executor_estimator.Estimator``:
it turns the PUBs into a quantum program for the runtime's Executor, and computes the
expectation values from the returned bits on the client. One code path for snapshots and real
devices: ``Estimator(mode=...)`` with a backend object. In local testing mode the mode is a
backend (a snapshot, or an ``AerSimulator`` holding the snapshot's noise restricted to the
circuit's active qubits, which is what makes it fast); on a real device it is a ``Batch`` of
``QiskitRuntimeService``. Every image's parameter set goes into one PUB whose parameter values
have shape ``(images, 1, parameters)``.

``resilience_level`` is 0 (no twirling, no mitigation: the estimator's default, level 1, would
add measurement twirling and TREX). Mitigation is done here, the same way in local mode and on
hardware; docs/hardware.md compares it with the estimator's own TREX and ZNE:

- ``readout``: two calibration circuits (all measured qubits in ``|0>``, all in ``|1>``) give each
  qubit's ``P(1|0)`` and ``P(0|1)``; ``<Z>`` is corrected as
  ``(<Z>_noisy - (p01 - p10)) / (1 - p01 - p10)`` (exact inversion of a tensored readout error
  on a single-qubit observable, as M3 and TREX do for ``Z_i``).
- ``zne``: the circuit with its two-qubit gates folded to each scale factor, extrapolated to zero
  noise (Richardson: the polynomial through the points; linear: a least-squares line).
- ``readout_zne``: both, readout first.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from qsight_pipeline.hardware import devices


def parameter_values(circuit: Any, spec: Any, angles: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(images, 1, parameters)`` values in ``circuit.parameters`` order."""
    inputs = {param: index for index, param in enumerate(spec.input_params)}
    trained = {param: index for index, param in enumerate(spec.weight_params)}
    columns = []
    for param in circuit.parameters:
        if param in inputs:
            columns.append(angles[:, inputs[param]])
        elif param in trained:
            columns.append(np.full(angles.shape[0], weights[trained[param]]))
        else:
            raise ValueError(f"circuit parameter {param} is neither an input nor a weight")
    return np.stack(columns, axis=1)[:, None, :].astype(np.float64)


def sampling_seed(*parts: Any) -> int:
    """A positive simulator seed from the condition (0 would mean 'random' to the local service)."""
    return zlib.crc32("/".join(str(p) for p in parts).encode()) % (2**31 - 2) + 1


def make_estimator(mode: Any, shots: int, seed: int | None) -> Any:
    """The runtime's ``executor_estimator.Estimator`` on ``mode`` (a backend object, or a ``Batch``),
    without twirling or mitigation of its own (``resilience_level`` 0)."""
    # lazy: optional dependency
    from qiskit_ibm_runtime.executor_estimator import Estimator

    estimator = Estimator(mode=mode)
    estimator.options.resilience_level = 0
    estimator.options.default_shots = int(shots)
    if seed is not None:
        estimator.options.simulator.seed_simulator = int(seed)
    return estimator


def sample_independently(mode: Any, pubs: list[tuple], shots: int, seed: int) -> list[Any]:
    """Each PUB's result, every PUB sampled with its own seed (``seed`` for the first).

    In local testing mode the executor seeds the simulator afresh with ``seed_simulator`` for
    each PUB of a job, so the PUBs of one seeded job share their random numbers (two equal PUBs
    give equal values). That would correlate the ZNE folds and the readout calibration with the
    circuit's own shot noise, which a device does not; so each PUB runs as its own job.
    """
    seeds = [seed] + [sampling_seed(seed, k) for k in range(1, len(pubs))]
    return [make_estimator(mode, shots, s).run([pub]).result()[0]
            for pub, s in zip(pubs, seeds, strict=True)]


def run_estimator(estimator: Any, pubs: list[tuple]) -> Any:
    """Submit PUBs in one job; returns the job (``.result()`` collects, ``.job_id()`` names it)."""
    return estimator.run(pubs)


def evs(result: Any, index: int) -> np.ndarray:
    return np.asarray(result[index].data.evs, dtype=np.float64)


def calibration_pubs(num_qubits: int, measured: list[int], observables: list[Any]) -> list[tuple]:
    """Two parameter-free PUBs: every qubit in |0>, and the measured qubits flipped to |1>."""
    # lazy: optional dependency
    from qiskit.circuit import QuantumCircuit

    zeros = QuantumCircuit(num_qubits, name="readout_cal_0")
    ones = QuantumCircuit(num_qubits, name="readout_cal_1")
    for qubit in measured:
        ones.x(qubit)
    return [(zeros, [observables]), (ones, [observables])]


def device_pubs(circuit: Any, observables: list[Any], values: np.ndarray, scales: list[int],
                calibration: tuple[int, list[int]] | None = None) -> list[tuple]:
    """The PUBs of one device job: the circuit folded to every ZNE scale (scale 1 = as is), then,
    with ``calibration = (width, measured qubits)``, the two readout calibration circuits.

    :func:`raw_and_calibration` reads the result back in the same order.
    """
    pubs = [(devices.fold_two_qubit_gates(circuit, s), [list(observables)], values)
            for s in scales]
    if calibration is not None:
        pubs += calibration_pubs(calibration[0], calibration[1], observables)
    return pubs


def raw_and_calibration(result: Any, scales: list[int], readout: bool) -> tuple[
        dict[int, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """``({scale: raw <Z>}, (p10, p01) or None)`` from a job built by :func:`device_pubs`."""
    raw = {s: evs(result, k) for k, s in enumerate(scales)}
    if not readout:
        return raw, None
    return raw, readout_calibration(evs(result, len(scales)), evs(result, len(scales) + 1))


def readout_calibration(z_zero: np.ndarray, z_one: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(p10, p01)`` per measured qubit from ``<Z>`` of the |0> and |1> calibration circuits."""
    z_zero = np.asarray(z_zero, dtype=np.float64).reshape(-1)
    z_one = np.asarray(z_one, dtype=np.float64).reshape(-1)
    p10 = (1.0 - z_zero) / 2.0  # <Z> = 1 - 2 P(1|0)
    p01 = (1.0 + z_one) / 2.0  # <Z> = -(1 - 2 P(0|1))
    return p10, p01


def correct_readout(values: np.ndarray, p10: np.ndarray, p01: np.ndarray) -> np.ndarray:
    """Invert the tensored readout error on each ``<Z_i>``; clipped to [-1, 1]."""
    denominator = np.clip(1.0 - p01 - p10, 1e-3, None)
    return np.clip((values - (p01 - p10)) / denominator, -1.0, 1.0)


def extrapolate(scales: list[int], values: list[np.ndarray], method: str) -> np.ndarray:
    """Zero-noise value from ``values[k]`` measured at noise scale ``scales[k]``."""
    x = np.asarray(scales, dtype=np.float64)
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in values])  # (scales, ...)
    flat = stacked.reshape(len(scales), -1)
    if method == "linear":
        design = np.stack([np.ones_like(x), x], axis=1)
        coefficients, *_ = np.linalg.lstsq(design, flat, rcond=None)
        zero = coefficients[0]
    elif method == "richardson":
        # Lagrange weights at 0 of the polynomial through every point.
        weights = np.array(
            [np.prod([x[m] / (x[m] - x[k]) for m in range(len(x)) if m != k]) for k in range(len(x))]
        )
        zero = weights @ flat
    else:
        raise ValueError(f"unknown extrapolation {method!r}; use richardson or linear")
    return np.clip(zero.reshape(stacked.shape[1:]), -1.0, 1.0)


def mitigated(
    raw: dict[int, np.ndarray], calibration: tuple[np.ndarray, np.ndarray] | None,
    mitigation: str, extrapolation: str,
) -> np.ndarray:
    """``<Z>`` under one mitigation from the raw values per fold scale (and the calibration)."""
    if mitigation in ("readout", "readout_zne"):
        if calibration is None:
            raise ValueError(f"mitigation {mitigation!r} needs the readout calibration")
        corrected = {s: correct_readout(v, *calibration) for s, v in raw.items()}
    else:
        corrected = dict(raw)
    if mitigation in ("zne", "readout_zne"):
        scales = sorted(corrected)
        return extrapolate(scales, [corrected[s] for s in scales], extrapolation)
    return corrected[1]
