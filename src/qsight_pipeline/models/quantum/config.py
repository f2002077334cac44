"""Configuration of the quantum head (the ``quantum`` block of ``parameters_quantum.yml``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

ENTANGLEMENTS: tuple[str, ...] = ("linear", "reverse_linear", "circular", "full")
ENCODINGS: tuple[str, ...] = ("angle", "zz")
EXECUTORS: tuple[str, ...] = ("torch", "qiskit")
TORCH_DTYPES: tuple[str, ...] = ("float64", "float32")
MAX_QUBITS = 16


def _is_int(value: Any) -> bool:
    # YAML booleans are ints in Python; ``n_qubits: true`` is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class QuantumConfig:
    """Everything that defines the quantum head's circuit and how it is executed.

    Attributes:
        enabled: Build and train the quantum head at all.
        n_qubits: Circuit width; also the size of the learned projection of the compressed features.
        reps: Layers of the ``real_amplitudes`` ansatz.
        entanglement: Two-qubit pattern of the ansatz (and of the ``zz`` encoding), in qiskit's
            names: ``linear``, ``reverse_linear``, ``circular`` or ``full``.
        encoding: ``angle`` (one RY rotation per qubit) or ``zz`` (qiskit's ``zz_feature_map``).
        encoding_reps: Repetitions of the ``zz`` feature map (must stay 1 for ``angle``).
        angle_scale: Encoded angles are ``angle_scale * pi * tanh(projection)``, so they stay in
            ``[-angle_scale*pi, angle_scale*pi]``.
        shots: ``None`` for exact expectation values, or the number of measurements per
            expectation value.
        executor: ``torch`` (batched statevector simulation in PyTorch, the default) or ``qiskit``
            (qiskit-machine-learning ``EstimatorQNN`` + ``TorchConnector``, the reference).
        torch_dtype: Real dtype of the torch simulation (complex states use the matching complex
            dtype). ``float64`` agrees with the reference to ~1e-12; ``float32`` is faster on GPUs.
        seed: Seed of the shot sampler (torch) or the simulator (qiskit-aer); ``None`` = random.
        standardize: Standardise the compressed features (mean and scale fitted on the training
            split, stored with the head) before the projection, as the quantum study does.
    """

    enabled: bool = True
    n_qubits: int = 4
    reps: int = 2
    entanglement: str = "linear"
    encoding: str = "angle"
    encoding_reps: int = 1
    angle_scale: float = 1.0
    shots: int | None = None
    executor: str = "torch"
    torch_dtype: str = "float64"
    seed: int | None = None
    standardize: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"quantum.enabled must be true or false, got {self.enabled!r}")
        if not _is_int(self.n_qubits) or not 1 <= self.n_qubits <= MAX_QUBITS:
            raise ValueError(
                f"quantum.n_qubits must be between 1 and {MAX_QUBITS}, got {self.n_qubits!r}"
            )
        if not _is_int(self.reps) or not 1 <= self.reps <= 20:
            raise ValueError(f"quantum.reps must be between 1 and 20, got {self.reps!r}")
        if self.entanglement not in ENTANGLEMENTS:
            raise ValueError(
                f"quantum.entanglement must be one of {', '.join(ENTANGLEMENTS)}, "
                f"got {self.entanglement!r}"
            )
        if self.encoding not in ENCODINGS:
            raise ValueError(
                f"quantum.encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}"
            )
        if self.encoding == "zz" and self.n_qubits < 2:
            raise ValueError(
                f"quantum.n_qubits must be at least 2 for encoding 'zz', got {self.n_qubits}"
            )
        if not _is_int(self.encoding_reps) or not 1 <= self.encoding_reps <= 10:
            raise ValueError(
                f"quantum.encoding_reps must be between 1 and 10, got {self.encoding_reps!r}"
            )
        if self.encoding == "angle" and self.encoding_reps != 1:
            raise ValueError(
                "quantum.encoding_reps only applies to encoding 'zz'; it must be 1 for 'angle', "
                f"got {self.encoding_reps!r}"
            )
        if (
            isinstance(self.angle_scale, bool)
            or not isinstance(self.angle_scale, int | float)
            or not 0 < self.angle_scale <= 2
        ):
            raise ValueError(
                f"quantum.angle_scale must be a number in (0, 2] (angles are "
                f"angle_scale * pi * tanh(.)), got {self.angle_scale!r}"
            )
        self.angle_scale = float(self.angle_scale)
        if self.shots is not None and (not _is_int(self.shots) or self.shots < 1):
            raise ValueError(
                f"quantum.shots must be null (exact) or a positive integer, got {self.shots!r}"
            )
        if self.executor not in EXECUTORS:
            raise ValueError(
                f"quantum.executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}"
            )
        if self.torch_dtype not in TORCH_DTYPES:
            raise ValueError(
                f"quantum.torch_dtype must be one of {', '.join(TORCH_DTYPES)}, "
                f"got {self.torch_dtype!r}"
            )
        if not isinstance(self.standardize, bool):
            raise ValueError(
                f"quantum.standardize must be true or false, got {self.standardize!r}"
            )
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"quantum.seed must be null or an integer, got {self.seed!r}")

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> QuantumConfig:
        """Build from the ``quantum`` parameter block; unknown keys are an error naming them."""
        params = dict(params or {})
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(
                f"Unknown quantum parameter(s): {', '.join('quantum.' + k for k in unknown)}. "
                f"Known: {', '.join(sorted(known))}"
            )
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for summaries, checkpoints and ``model_info.json``)."""
        return dataclasses.asdict(self)
