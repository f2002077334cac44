"""The quantum head: one qiskit circuit, two executors (qiskit-machine-learning and torch).

Importing this package does not import qiskit; that happens when a head or circuit is built, so
the rest of the project runs classical-only where the ``quantum`` extra is missing.
"""

from .availability import QuantumDependencyError, quantum_dependencies_missing
from .config import QuantumConfig
from .head import QuantumHead, build_quantum_head

__all__ = [
    "QuantumConfig",
    "QuantumDependencyError",
    "QuantumHead",
    "build_quantum_head",
    "quantum_dependencies_missing",
]
