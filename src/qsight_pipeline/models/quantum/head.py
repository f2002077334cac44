"""``QuantumHead``: projection -> bounded angles -> circuit ``<Z_i>`` -> linear map to the grades."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

from .availability import require_quantum_dependencies
from .circuit import QuantumCircuitSpec, build_circuit
from .config import EXECUTORS, QuantumConfig
from .qiskit_executor import QiskitExecutor
from .torch_executor import TorchStatevectorExecutor

logger = logging.getLogger(__name__)

# Initial spread of the ansatz angles: near the identity, so that at the start the readout sees
# roughly cos(angle_i) of each projected feature and gradients are large.
_WEIGHT_INIT_STD = 0.1


class QuantumHead(nn.Module):
    """The quantum head of the hybrid model.

    ``forward(compressed (B, in_features)) -> logits (B, num_classes)``:

    1. ``projection`` (``Linear(in_features, n_qubits)``) and ``angle_scale * pi * tanh`` give one
       bounded angle per qubit;
    2. the executor evaluates ``<Z_i>`` of the qiskit circuit for those angles and the trainable
       ``circuit_weights``;
    3. ``readout`` (``Linear(n_qubits, num_classes)``) maps them to logits.

    The parameters (``projection.*``, ``circuit_weights``, ``readout.*``) belong to the head, never to
    an executor, so the ``state_dict`` is the same whichever executor runs it, and
    :meth:`set_executor` switches between them in place.
    """

    def __init__(
        self,
        in_features: int,
        config: QuantumConfig,
        num_classes: int = 5,
        spec: QuantumCircuitSpec | None = None,
    ) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 1:
            raise ValueError(
                f"QuantumHead needs in_features >= 1 and num_classes >= 1, got {in_features}, "
                f"{num_classes}"
            )
        self.config = QuantumConfig.from_params(config)
        self.in_features = in_features
        self.num_classes = num_classes
        self.spec = spec if spec is not None else build_circuit(self.config)
        n_qubits = self.spec.num_qubits
        self.projection = nn.Linear(in_features, n_qubits)
        self.circuit_weights = nn.Parameter(torch.randn(self.spec.num_weights) * _WEIGHT_INIT_STD)
        self.readout = nn.Linear(n_qubits, num_classes)
        if self.config.standardize:
            # Buffers only when asked for, so heads saved without standardisation load unchanged.
            self.register_buffer("feature_mean", torch.zeros(in_features))
            self.register_buffer("feature_scale", torch.ones(in_features))
        self._executors: dict[str, Any] = {}
        self.set_executor(self.config.executor)

    @property
    def executor_name(self) -> str:
        """Name of the executor that ``forward`` uses (``torch`` or ``qiskit``)."""
        return self.config.executor

    def set_executor(self, name: str) -> None:
        """Run the same circuit and parameters through another executor from now on."""
        if name not in self._executors:
            self._executors[name] = _make_executor(name, self.spec, self.config)
        self.config = self.config.replace(executor=name)
        logger.debug("Quantum head now runs on the %s executor", name)

    @property
    def executor(self) -> Any:
        """The active executor: a callable ``(angles (B, n), weights (W,)) -> <Z> (B, n)``."""
        name = self.config.executor
        if name not in self._executors:  # dropped by pickling / deepcopy; rebuilt on demand
            self._executors[name] = _make_executor(name, self.spec, self.config)
        return self._executors[name]

    def fit_standardizer(self, train_features: Any) -> None:
        """Set the feature mean and scale from the training split (``quantum.standardize``)."""
        if not self.config.standardize:
            raise ValueError("fit_standardizer needs a head built with quantum.standardize: true")

        scaler = StandardScaler().fit(np.asarray(train_features, dtype=np.float64))
        self.feature_mean.copy_(torch.as_tensor(scaler.mean_))
        self.feature_scale.copy_(torch.as_tensor(scaler.scale_))

    def encode(self, compressed: torch.Tensor) -> torch.Tensor:
        """Angles ``(B, n_qubits)`` in ``[-angle_scale*pi, angle_scale*pi]``."""
        if self.config.standardize:
            compressed = (compressed - self.feature_mean.to(compressed.dtype)) / (
                self.feature_scale.to(compressed.dtype)
            )
        return (self.config.angle_scale * math.pi) * torch.tanh(self.projection(compressed))

    def expectations(self, compressed: torch.Tensor) -> torch.Tensor:
        """``<Z_i>`` per qubit, ``(B, n_qubits)``, for the compressed features."""
        return self.executor(self.encode(compressed), self.circuit_weights)

    def forward(self, compressed: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``."""
        if compressed.ndim != 2 or compressed.shape[1] != self.in_features:
            raise ValueError(
                f"QuantumHead expects compressed features of shape (B, {self.in_features}), "
                f"got {tuple(compressed.shape)}"
            )
        expectations = self.expectations(compressed)
        return self.readout(expectations.to(self.readout.weight.dtype))

    def extra_repr(self) -> str:
        c = self.config
        shots = "exact" if c.shots is None else f"shots={c.shots}"
        return (
            f"n_qubits={c.n_qubits}, reps={c.reps}, entanglement={c.entanglement}, "
            f"encoding={c.encoding}, executor={c.executor}, {shots}"
        )

    def __getstate__(self) -> dict[str, Any]:
        # Executors hold qiskit primitives and device caches; they are rebuilt on first use.
        state = self.__dict__.copy()
        state["_executors"] = {}
        return state


def _torch_executor(spec: QuantumCircuitSpec, config: QuantumConfig) -> Any:
    return TorchStatevectorExecutor(
        spec, shots=config.shots, seed=config.seed, dtype=config.torch_dtype
    )


def _qiskit_executor(spec: QuantumCircuitSpec, config: QuantumConfig) -> Any:
    return QiskitExecutor(spec, shots=config.shots, seed=config.seed)


# The executors by name (``quantum.executor``): each builds a callable
# ``(angles (B, n), weights (W,)) -> <Z> (B, n)`` for one circuit. Its modules load on first use.
EXECUTOR_FACTORIES: dict[str, Any] = {"torch": _torch_executor, "qiskit": _qiskit_executor}
assert set(EXECUTOR_FACTORIES) == set(EXECUTORS), "config.EXECUTORS and the factories disagree"


def _make_executor(name: str, spec: QuantumCircuitSpec, config: QuantumConfig) -> Any:
    if name not in EXECUTOR_FACTORIES:
        raise ValueError(
            f"quantum.executor must be one of {', '.join(EXECUTOR_FACTORIES)}, got {name!r}"
        )
    return EXECUTOR_FACTORIES[name](spec, config)


def build_quantum_head(
    in_features: int, config: QuantumConfig, num_classes: int = 5
) -> QuantumHead:
    """Build the quantum head, or raise ``QuantumDependencyError`` (an ``ImportError``).

    The error names each missing package and the pip command; the caller decides whether to
    disable the head. ``config.enabled`` is the caller's switch too: this builds the head as asked.
    """
    require_quantum_dependencies(config.executor, config.shots)
    head = QuantumHead(in_features, config, num_classes)
    logger.info(
        "Quantum head: %d qubits, %s encoding, real_amplitudes reps=%d (%s), %d circuit weights, "
        "%s executor, %s",
        config.n_qubits,
        config.encoding,
        config.reps,
        config.entanglement,
        head.spec.num_weights,
        config.executor,
        "exact" if config.shots is None else f"{config.shots} shots",
    )
    return head
