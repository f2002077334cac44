"""Configuration of the quantum head: the typed ``quantum`` block (see ``config/quantum.py``)."""

from qsight_pipeline.config.quantum import (
    ENCODINGS,
    ENTANGLEMENTS,
    EXECUTORS,
    MAX_QUBITS,
    TORCH_DTYPES,
    QuantumConfig,
)

__all__ = ["ENCODINGS", "ENTANGLEMENTS", "EXECUTORS", "MAX_QUBITS", "TORCH_DTYPES", "QuantumConfig"]
