"""Device snapshots: lookup by name, transpilation, the active-qubit reduction, noise and cost.

A snapshot is a ``FakeBackendV2`` of ``qiskit_ibm_runtime.fake_provider``: a real device's coupling
map, basis gates, gate errors, readout errors and durations as IBM published them on a date.
Simulating the whole 133- or 156-qubit device for a 4-qubit head wastes nearly all the time, so
:func:`prepare_circuit` also builds the transpiled circuit reduced to the physical qubits it uses,
and :func:`noise_model` takes the noise of exactly those qubits from the snapshot's target.

Noise model (documented in docs/hardware.md): every gate of the snapshot's target on the active qubits
gets a depolarizing error whose average gate infidelity equals the snapshot's reported gate error
(randomized-benchmarking numbers already include decoherence during the gate); every measured
qubit gets the snapshot's asymmetric readout error (``prob_meas1_prep0``, ``prob_meas0_prep1``,
or the symmetric ``measure`` error when the snapshot has no such properties). Idle decoherence
and crosstalk are not modelled. ``scale`` multiplies every error probability (``0`` = noiseless).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from qsight_pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

# Per-shot repetition delay when a snapshot does not say (IBM's default on Eagle/Heron, 250 us).
DEFAULT_REP_DELAY_S = 250e-6
_NON_GATES = frozenset({"barrier", "delay", "measure", "reset"})


class UnknownDeviceError(ConfigError):
    """A device snapshot name that ``qiskit_ibm_runtime.fake_provider`` does not have."""


class DeviceTooSmallError(ConfigError):
    """The quantum head needs more qubits than the device has."""


def _snapshot_classes() -> dict[str, type]:
    """``{fake_<name>: class}`` for every FakeBackendV2 snapshot, without instantiating them."""
    # lazy: optional dependency
    from qiskit_ibm_runtime import fake_provider
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    classes: dict[str, type] = {}
    for attribute in dir(fake_provider):
        cls = getattr(fake_provider, attribute)
        if not (isinstance(cls, type) and issubclass(cls, FakeBackendV2)) or cls is FakeBackendV2:
            continue
        stem = attribute.removeprefix("Fake").removesuffix("V2").removesuffix("Backend")
        if not stem:
            continue
        name = "fake_" + re.sub(r"(?<!^)(?=[A-Z])", "_", stem).lower()
        classes.setdefault(name, cls)
    return classes


def snapshot_names() -> list[str]:
    """The device snapshots that can be named in ``quantum_hardware.devices``."""
    return sorted(_snapshot_classes())


def load_snapshot(name: str, key: str = "quantum_hardware.devices") -> Any:
    """The snapshot ``name`` (e.g. ``fake_torino``), or an error listing the available ones.

    One object per name and process (building a snapshot's target from its JSON takes ~1 s);
    callers only read it.
    """
    classes = _snapshot_classes()
    if name not in classes:
        raise UnknownDeviceError(
            f"{key}: unknown device snapshot {name!r}. Available in "
            f"qiskit_ibm_runtime.fake_provider: {', '.join(sorted(classes))}."
        )
    if name not in _SNAPSHOTS:
        _SNAPSHOTS[name] = classes[name]()
    return _SNAPSHOTS[name]


_SNAPSHOTS: dict[str, Any] = {}


def check_width(backend: Any, n_qubits: int, key: str = "quantum_hardware.devices") -> None:
    if n_qubits > backend.num_qubits:
        raise DeviceTooSmallError(
            f"{key}: the quantum head has {n_qubits} qubits but {backend.name} has only "
            f"{backend.num_qubits}; choose a larger device or a narrower head (quantum.n_qubits)."
        )


@dataclass
class DeviceCircuit:
    """The head's circuit as a device runs it, and its reduction to the qubits it uses.

    Attributes:
        isa: the transpiled circuit on all of the device's qubits (what a real device receives).
        observables: ``Z_i`` of virtual qubit ``i`` moved to its physical qubit
            (``SparsePauliOp.apply_layout``), on all of the device's qubits.
        active: the physical qubits the circuit touches, in order; reduced qubit ``j`` is
            ``active[j]``.
        reduced: ``isa`` on ``len(active)`` qubits (the same gates, renumbered).
        reduced_observables: ``observables`` on the reduced qubits.
        measured: the reduced indices of the measured (observed) qubits, in output order.
    """

    device: str
    backend: Any
    isa: Any
    observables: list[Any]
    active: list[int]
    reduced: Any
    reduced_observables: list[Any]
    measured: list[int]
    stats: dict[str, Any] = field(default_factory=dict)


def transpile_for(circuit: Any, backend: Any, optimization_level: int, seed: int) -> Any:
    # lazy: optional dependency
    from qiskit.transpiler import generate_preset_pass_manager

    manager = generate_preset_pass_manager(
        optimization_level=optimization_level, backend=backend, seed_transpiler=seed
    )
    return manager.run(circuit)


def prepare_circuit(
    spec: Any, backend: Any, device: str, *, optimization_level: int = 3, seed_transpiler: int = 7
) -> DeviceCircuit:
    """Transpile the head's circuit for ``backend`` and reduce it to its active qubits."""
    # lazy: optional dependency
    from qiskit.circuit import QuantumCircuit
    from qiskit.quantum_info import SparsePauliOp

    check_width(backend, spec.num_qubits)
    isa = transpile_for(spec.circuit, backend, optimization_level, seed_transpiler)
    observables = [obs.apply_layout(isa.layout) for obs in spec.observables]
    observed = sorted({q for obs in observables for _, qubits, _ in obs.to_sparse_list() for q in qubits})
    used = {
        isa.find_bit(q).index
        for instruction in isa.data
        if instruction.operation.name not in ("barrier", "delay")
        for q in instruction.qubits
    }
    active = sorted(used | set(observed))
    position = {physical: j for j, physical in enumerate(active)}
    reduced = QuantumCircuit(len(active), name=f"{spec.circuit.name}_{device}")
    for instruction in isa.data:
        if instruction.operation.name in ("barrier", "delay"):
            continue
        reduced.append(
            instruction.operation, [position[isa.find_bit(q).index] for q in instruction.qubits]
        )
    reduced_observables = [
        SparsePauliOp.from_sparse_list(
            [(label, [position[q] for q in qubits], coeff) for label, qubits, coeff in obs.to_sparse_list()],
            num_qubits=len(active),
        )
        for obs in observables
    ]
    measured = [position[obs.to_sparse_list()[0][1][0]] for obs in observables]
    prepared = DeviceCircuit(
        device, backend, isa, observables, active, reduced, reduced_observables, measured
    )
    prepared.stats = circuit_statistics(prepared)
    return prepared


# --------------------------------------------------------------------------- noise


def readout_errors(backend: Any, physical: int) -> tuple[float, float]:
    """``(P(measure 1 | prepared 0), P(measure 0 | prepared 1))`` of one physical qubit."""
    try:
        properties = backend.properties()
        p10 = properties.qubit_property(physical, "prob_meas1_prep0")[0]
        p01 = properties.qubit_property(physical, "prob_meas0_prep1")[0]
        return float(p10), float(p01)
    except Exception:  # noqa: BLE001 - a snapshot without the asymmetric numbers
        error = _instruction_error(backend, "measure", (physical,))
        return error, error


def _instruction_property(backend: Any, name: str, qargs: tuple[int, ...], field: str) -> float:
    """The snapshot's ``error`` or ``duration`` of one instruction on ``qargs``; 0 where the
    target lacks the instruction, those qubits or the number."""
    target = backend.target
    if name not in target.operation_names:
        return 0.0
    properties = target[name].get(qargs)
    value = None if properties is None else getattr(properties, field)
    return 0.0 if value is None else float(value)


def _instruction_error(backend: Any, name: str, qargs: tuple[int, ...]) -> float:
    return _instruction_property(backend, name, qargs, "error")


def noise_model(
    prepared: DeviceCircuit, scale: float = 1.0, readout_scale: float | None = None
) -> Any:
    """An Aer noise model on the reduced qubits from the snapshot's errors of those qubits.

    ``scale`` multiplies the gate errors, ``readout_scale`` (default: ``scale``) the readout
    errors."""
    readout_scale = scale if readout_scale is None else readout_scale
    # lazy: optional dependency
    from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

    backend = prepared.backend
    position = {physical: j for j, physical in enumerate(prepared.active)}
    gate_names = [
        name for name in backend.target.operation_names
        if name not in _NON_GATES and name in _GATE_NAMES
    ]
    model = NoiseModel(basis_gates=[*gate_names])
    for name in gate_names if scale > 0 else []:
        for qargs, properties in backend.target[name].items():
            if qargs is None or properties is None or properties.error is None:
                continue
            if not all(q in position for q in qargs) or properties.error <= 0:
                continue
            dim = 2 ** len(qargs)
            probability = min(properties.error * scale * dim / (dim - 1), 1.0)
            model.add_quantum_error(
                depolarizing_error(probability, len(qargs)), name, [position[q] for q in qargs]
            )
    for physical in (prepared.active[j] for j in prepared.measured) if readout_scale > 0 else []:
        p10, p01 = readout_errors(backend, physical)
        p10, p01 = min(p10 * readout_scale, 0.5), min(p01 * readout_scale, 0.5)
        model.add_readout_error(ReadoutError([[1 - p10, p10], [p01, 1 - p01]]), [position[physical]])
    return model


_GATE_NAMES = frozenset({"cz", "cx", "ecr", "sx", "x", "rz", "id", "rx", "rzz"})
# Up to this many active qubits the density matrix (one evolution per image, then the shots are
# sampled) beats noisy statevector trajectories (one evolution per shot).
DENSITY_MATRIX_MAX_QUBITS = 10


def simulator(model: Any, num_qubits: int, seed: int | None = None) -> Any:
    """The AerSimulator that stands in for the device in local testing mode.

    Profiled on the 2-core VM (benchmarks/quantum_hardware.py, 1,000 images of a 4-qubit head at
    1,024 shots): the density-matrix method, one simulator thread (the VM's cores are shared and
    thread oversubscription costs more than it gains on circuits this small) and no gate fusion
    (compiling the fusion costs more than it saves on ~40 gates) took 8.2 s against 15.2 s with
    qiskit-aer's defaults.
    """
    # lazy: optional dependency
    from qiskit_aer import AerSimulator

    method = "density_matrix" if num_qubits <= DENSITY_MATRIX_MAX_QUBITS else "automatic"
    options: dict[str, Any] = {"max_parallel_threads": 1, "max_parallel_experiments": 1,
                               "fusion_enable": False}
    if seed is not None:
        options["seed_simulator"] = seed
    return AerSimulator(noise_model=model, method=method, **options)


# --------------------------------------------------------------------------- folding (ZNE)


def fold_two_qubit_gates(circuit: Any, scale: int) -> Any:
    """``circuit`` with each two-qubit gate ``G`` replaced by ``G (G^-1 G)^k``, ``scale = 2k+1``.

    The device's two-qubit gates (CZ, ECR, CX) are their own inverses, so the folded circuit stays
    in the device's basis and needs no new transpilation; barriers keep the pairs apart. Two-qubit
    gates dominate the error of these circuits, so this scales the noise by about ``scale``.
    """
    if scale == 1:
        return circuit
    if scale < 1 or scale % 2 == 0:
        raise ValueError(f"fold scale must be an odd integer >= 1, got {scale}")
    folded = circuit.copy_empty_like()
    for instruction in circuit.data:
        folded.append(instruction)
        operation = instruction.operation
        if operation.num_qubits == 2 and operation.name not in _NON_GATES:
            inverse = operation.inverse()
            for _ in range((scale - 1) // 2):
                folded.barrier(instruction.qubits)
                folded.append(inverse, instruction.qubits)
                folded.barrier(instruction.qubits)
                folded.append(operation, instruction.qubits)
    return folded


# --------------------------------------------------------------------------- statistics and cost


def circuit_statistics(prepared: DeviceCircuit) -> dict[str, Any]:
    """Depth, gate counts, estimated success probability and duration of the transpiled circuit.

    - ``depth``: of the transpiled circuit without measurements.
    - ``two_qubit_gates``: the number of two-qubit gates.
    - ``success_probability``: ``prod(1 - gate error)`` over every gate times
      ``prod(1 - readout error)`` over the measured qubits, from the snapshot's numbers.
    - ``duration_s``: the critical path of the circuit with the target's instruction durations
      (``rz`` is virtual and takes no time), plus one measurement.
    """
    backend, isa = prepared.backend, prepared.isa
    success = 1.0
    clock: dict[int, float] = {}
    two_qubit = 0
    two_qubit_time = 0.0
    for instruction in isa.data:
        name = instruction.operation.name
        if name in ("barrier", "delay"):
            continue
        qargs = tuple(isa.find_bit(q).index for q in instruction.qubits)
        if len(qargs) == 2:
            two_qubit += 1
        success *= 1.0 - _instruction_error(backend, name, qargs)
        start = max((clock.get(q, 0.0) for q in qargs), default=0.0)
        duration = _instruction_duration(backend, name, qargs)
        if len(qargs) == 2:
            two_qubit_time += duration
        for q in qargs:
            clock[q] = start + duration
    measured = [prepared.active[j] for j in prepared.measured]
    for physical in measured:
        success *= 1.0 - _instruction_error(backend, "measure", (physical,))
    measure_time = max((_instruction_duration(backend, "measure", (q,)) for q in measured), default=0.0)
    return {
        "depth": int(isa.depth(lambda item: item.operation.name not in ("barrier", "delay"))),
        "two_qubit_gates": two_qubit,
        "gates": int(sum(1 for i in isa.data if i.operation.name not in ("barrier", "delay"))),
        "active_qubits": len(prepared.active),
        "physical_qubits": [prepared.active[j] for j in prepared.measured],
        "success_probability": float(success),
        "duration_s": float(max(clock.values(), default=0.0) + measure_time),
        "two_qubit_time_s": float(two_qubit_time),
        "rep_delay_s": rep_delay(backend),
    }


def _instruction_duration(backend: Any, name: str, qargs: tuple[int, ...]) -> float:
    return _instruction_property(backend, name, qargs, "duration")


def rep_delay(backend: Any) -> float:
    """Seconds between shots (the device's default ``rep_delay``), or IBM's usual 250 us."""
    try:
        value = backend.configuration().default_rep_delay
        if value:
            # Snapshots give it in microseconds.
            return float(value) * 1e-6 if value > 1e-3 else float(value)
    except Exception:  # noqa: BLE001
        pass
    return DEFAULT_REP_DELAY_S


def qpu_seconds_per_1000(
    stats: dict[str, Any], shots: int, scale_factors: list[int], overheads: tuple[float, float],
    images: int = 1000, calibration_circuits: int = 0,
) -> float:
    """Estimated QPU seconds to grade ``images`` images (1,000 by default) at ``shots`` shots.

    Included: per shot, the circuit's duration (critical path with the snapshot's gate and
    measurement durations) plus the device's repetition delay (``rep_delay``, the wait for the
    qubits to reset between shots, which dominates for short circuits); per circuit (one per image
    and ZNE scale factor, plus ``calibration_circuits`` for readout mitigation),
    ``overheads[0]`` seconds (loading the parameters into the control electronics); per job,
    ``overheads[1]``. A circuit folded to scale ``s`` is counted ``(s - 1)`` times the
    summed two-qubit gate time longer (an upper bound: folded gates on different pairs could run
    in parallel). Not included: queueing, transpilation and classical processing on IBM's side,
    and the minimum billing of some plans.
    """
    overhead_per_circuit, seconds = overheads
    for scale in scale_factors:
        duration = stats["duration_s"] + (scale - 1) * stats["two_qubit_time_s"]
        seconds += images * (shots * (duration + stats["rep_delay_s"]) + overhead_per_circuit)
    if calibration_circuits:
        seconds += calibration_circuits * (
            shots * (stats["duration_s"] + stats["rep_delay_s"]) + overhead_per_circuit
        )
    return float(seconds)
