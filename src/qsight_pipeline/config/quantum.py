"""The ``quantum`` block: the circuit of the quantum head and how it is executed.

The circuit is defined once, with qiskit; ``executor`` only chooses how it is evaluated.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, model_validator

from qsight_pipeline.config.base import ParamsBlock, format_validation_error
from qsight_pipeline.config.types import (
    ENCODINGS,
    ENTANGLEMENTS,
    EXECUTORS,
    TORCH_DTYPES,
    Encoding,
    Entanglement,
    Executor,
    TorchDtype,
)
from qsight_pipeline.errors import ConfigError

MAX_QUBITS = 16
__all__ = [
    "ENCODINGS", "ENTANGLEMENTS", "EXECUTORS", "MAX_QUBITS", "TORCH_DTYPES", "QuantumConfig",
]


class QuantumConfig(ParamsBlock):
    """Everything that defines the quantum head's circuit and how it is executed.

    Attributes:
        enabled: Build and train the quantum head at all.
        n_qubits: Circuit width; also the size of the learned projection of the compressed features.
        reps: Layers of the ``real_amplitudes`` ansatz.
        entanglement: Two-qubit pattern of the ansatz (and of the ``zz`` encoding), in qiskit's
            names; ``none`` drops every two-qubit gate (a product-state circuit).
        encoding: ``angle`` (one RY rotation per qubit) or ``zz`` (qiskit's ``zz_feature_map``).
        encoding_reps: Repetitions of the ``zz`` feature map (must stay 1 for ``angle``).
        angle_scale: Encoded angles are ``angle_scale * pi * tanh(projection)``.
        shots: ``None`` for exact expectation values, or the measurements per expectation value.
        executor: ``torch`` (batched statevector simulation in PyTorch, the default) or ``qiskit``
            (qiskit-machine-learning ``EstimatorQNN`` + ``TorchConnector``, the reference).
        torch_dtype: Real dtype of the torch simulation; ``float64`` agrees with the reference to
            ~1e-12, ``float32`` is faster on GPUs.
        seed: Seed of the shot sampler (torch) or the simulator (qiskit-aer); ``None`` = random.
        standardize: Standardise the compressed features (mean and scale fitted on the training
            split, stored with the head) before the projection, as the quantum study does.
    """

    enabled: bool = True
    n_qubits: int = Field(4, ge=1, le=MAX_QUBITS)
    reps: int = Field(2, ge=1, le=20)
    entanglement: Entanglement = "linear"
    encoding: Encoding = "angle"
    encoding_reps: int = Field(1, ge=1, le=10)
    angle_scale: float = Field(1.0, gt=0, le=2)
    shots: int | None = Field(None, ge=1)
    executor: Executor = "torch"
    torch_dtype: TorchDtype = "float64"
    seed: int | None = None
    standardize: bool = True

    @model_validator(mode="after")
    def _encoding_fits(self) -> QuantumConfig:
        if self.encoding == "zz" and self.n_qubits < 2:
            raise ValueError(f"n_qubits must be at least 2 for encoding 'zz', got {self.n_qubits}")
        if self.encoding == "angle" and self.encoding_reps != 1:
            raise ValueError(
                "encoding_reps only applies to encoding 'zz'; it must be 1 for 'angle', "
                f"got {self.encoding_reps}"
            )
        return self

    @classmethod
    def from_params(cls, params: Any) -> QuantumConfig:
        """Build from the ``quantum`` block (a mapping, a QuantumConfig or None); errors name
        every bad key as ``quantum.<key>``."""
        if isinstance(params, cls):
            return params
        try:
            return cls.model_validate(dict(params or {}))
        except ValidationError as error:
            raise ConfigError(
                "Invalid quantum parameters:\n  "
                + "\n  ".join(format_validation_error(error, "quantum"))
            ) from None

    def replace(self, **changes: Any) -> QuantumConfig:
        """A validated copy with ``changes`` applied."""
        return type(self).from_params({**self.model_dump(), **changes})
