"""The quantum head's circuit, defined once with qiskit. Both executors run this object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qsight_pipeline.config.types import NO_ENTANGLEMENT

from .availability import require_quantum_dependencies
from .config import QuantumConfig

if TYPE_CHECKING:
    from qiskit.circuit import Parameter, QuantumCircuit
    from qiskit.quantum_info import SparsePauliOp

INPUT_PREFIX = "x"
WEIGHT_PREFIX = "theta"


@dataclass(frozen=True)
class QuantumCircuitSpec:
    """A parametrised circuit and how its parameters and outputs are ordered.

    Attributes:
        circuit: encoding followed by the ``real_amplitudes`` ansatz, no measurements.
        input_params: one parameter per qubit, bound to the encoded angles (column order).
        weight_params: the ansatz parameters, in the order of the head's ``circuit_weights``.
        observables: ``Z_i`` on qubit ``i`` (qiskit's little-endian order), one per output column.
    """

    circuit: QuantumCircuit
    input_params: tuple[Parameter, ...]
    weight_params: tuple[Parameter, ...]
    observables: tuple[SparsePauliOp, ...]

    @property
    def num_qubits(self) -> int:
        """Circuit width (= number of inputs = number of outputs)."""
        return self.circuit.num_qubits

    @property
    def num_weights(self) -> int:
        """Number of trainable circuit parameters."""
        return len(self.weight_params)


def build_circuit(config: QuantumConfig) -> QuantumCircuitSpec:
    """Build the head's circuit from the configuration (imports qiskit here, not at module load).

    - ``angle`` encoding: ``RY(x_i)`` on qubit ``i`` from ``|0...0>``;
    - ``zz`` encoding: qiskit's ``zz_feature_map`` (H, ``P(2 x_i)``, and ``P(2 (pi - x_i)(pi - x_j))``
      between the pairs of the configured entanglement), ``encoding_reps`` times;
    - ansatz: qiskit's ``real_amplitudes(n_qubits, reps, entanglement)``;
    - readout: ``<Z_i>`` for every qubit.

    Entanglement ``none`` hands qiskit's builders no pairs: the same rotations and width with
    every two-qubit gate gone (the ansatz's CX and the feature map's ZZ terms), a product state.
    """
    require_quantum_dependencies("torch")  # qiskit itself; executors check their own extras
    # lazy: optional dependency
    from qiskit.circuit import ParameterVector, QuantumCircuit
    from qiskit.circuit.library import real_amplitudes, zz_feature_map
    from qiskit.quantum_info import SparsePauliOp

    n = config.n_qubits
    if config.encoding == "angle":
        inputs = ParameterVector(INPUT_PREFIX, n)
        encoding = QuantumCircuit(n, name="angle_encoding")
        for qubit in range(n):
            encoding.ry(inputs[qubit], qubit)
        input_params: tuple[Any, ...] = tuple(inputs)
    else:
        encoding = zz_feature_map(
            n,
            reps=config.encoding_reps,
            entanglement=_feature_map_pairs(config.entanglement, n),
            parameter_prefix=INPUT_PREFIX,
        )
        input_params = tuple(sorted(encoding.parameters, key=lambda p: p.index))

    ansatz = real_amplitudes(
        n, reps=config.reps, entanglement=_ansatz_pairs(config.entanglement),
        parameter_prefix=WEIGHT_PREFIX,
    )
    weight_params = tuple(sorted(ansatz.parameters, key=lambda p: p.index))

    circuit = QuantumCircuit(n, name="quantum_head")
    circuit.compose(encoding, inplace=True)
    circuit.compose(ansatz, inplace=True)

    observables = tuple(
        SparsePauliOp.from_sparse_list([("Z", [qubit], 1.0)], num_qubits=n) for qubit in range(n)
    )
    if len(input_params) != n:
        raise RuntimeError(f"Expected {n} input parameters, the encoding has {len(input_params)}")
    return QuantumCircuitSpec(circuit, input_params, weight_params, observables)


def _ansatz_pairs(entanglement: str) -> str | list:
    """``real_amplitudes``' entanglement: qiskit's name, or no pairs for ``none``."""
    return [] if entanglement == NO_ENTANGLEMENT else entanglement


def _feature_map_pairs(entanglement: str, n: int) -> str | dict[int, list]:
    """``zz_feature_map``'s entanglement: qiskit's name, or for ``none`` every single-qubit
    ``Z`` term and no ``ZZ`` pair (qiskit's per-term form)."""
    if entanglement != NO_ENTANGLEMENT:
        return entanglement
    return {1: [(qubit,) for qubit in range(n)], 2: []}
