"""The heads compared by the quantum study, as scikit-learn estimators.

``QuantumHeadClassifier`` (the quantum head on the fast torch executor, optionally with its circuit
frozen at random values), ``ClassicalTwinClassifier`` (the same head with the circuit swapped for a
classical layer of exactly as many trainable weights) and ``HeadBClassifier`` (head B's MLP) share
one training recipe: features standardised by a ``StandardScaler`` fitted on the training rows and
kept in the estimator, the class-balanced cross-entropy of the trainer, AdamW, fixed epochs and
batch size, and a seed. So ``GridSearchCV``, ``cross_val_score`` and the study treat them, and
scikit-learn's own ``LogisticRegression``, alike.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from qsight_pipeline.models.class_weights import balanced_class_weights
from qsight_pipeline.models.hybrid import ClassicalHead
from qsight_pipeline.models.quantum import QuantumConfig, QuantumHead
from qsight_pipeline.models.quantum.circuit import build_circuit


def class_balanced_weights(y_encoded: np.ndarray, n_classes: int) -> np.ndarray:
    """The trainer's class-balanced loss weights (``models.class_weights``) from encoded labels."""
    return balanced_class_weights(np.bincount(np.asarray(y_encoded), minlength=n_classes))


def trainable_parameter_count(module: nn.Module) -> int:
    """Number of trainable scalars of a module."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


class TorchHeadClassifier(ClassifierMixin, BaseEstimator):
    """Shared ``fit``/``predict_proba`` of the torch heads; subclasses build the module.

    Fitted attributes: ``classes_``, ``n_features_in_``, ``scaler_`` (``None`` without
    ``standardize``), ``module_`` (the trained ``nn.Module``), ``n_trainable_params_``,
    ``train_seconds_`` and ``loss_curve_`` (mean training loss per epoch).
    """

    def _build_module(self, n_features: int, n_classes: int) -> nn.Module:
        raise NotImplementedError

    # Whether :func:`fit_together` may train several of these as one vectorised run: the forward
    # pass must be deterministic (no dropout), as ``torch.func.vmap`` refuses random ops.
    vectorisable = True

    def fit(self, X: Any, y: Any) -> TorchHeadClassifier:
        features, y_encoded = self._prepare(X, y)
        seed = self._fit_seed()
        start = time.perf_counter()
        # fork_rng: seeding for this fit must not change the caller's global torch random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.module_ = self._build_module(features.shape[1], len(self.classes_))
            self.loss_curve_ = self._train(features, y_encoded, seed)
        self._finish(time.perf_counter() - start)
        return self

    def _prepare(self, X: Any, y: Any) -> tuple[torch.Tensor, np.ndarray]:
        """Checks the data, sets ``classes_`` and ``scaler_``; the scaled features, encoded labels."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_ = np.unique(y) if self.classes is None else np.asarray(self.classes)
        missing = np.setdiff1d(np.unique(y), self.classes_)
        if missing.size:
            raise ValueError(f"y holds labels {missing.tolist()} that are not in classes")
        self.scaler_ = StandardScaler().fit(X) if self.standardize else None
        return self._scaled(X), np.searchsorted(self.classes_, y)

    def _fit_seed(self) -> int:
        """The torch seed of the initial weights and of the batch order."""
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _finish(self, seconds: float) -> None:
        self.module_.eval()
        self.train_seconds_ = seconds
        self.n_trainable_params_ = trainable_parameter_count(self.module_)

    def _optimizer(self, parameters: Any) -> Any:
        # foreach: one multi-tensor update per step instead of a Python loop over the parameters
        # (the heads are small, so that loop is a visible share of a step); the same arithmetic,
        # bitwise the same weights. Parameter groups may set their own ``lr`` (fit_together).
        return torch.optim.AdamW(
            parameters, lr=self.learning_rate, weight_decay=self.weight_decay, foreach=True
        )

    def _loss_weights(self, y_encoded: np.ndarray) -> torch.Tensor | None:
        if not self.class_balanced:
            return None
        weights = class_balanced_weights(y_encoded, len(self.classes_))
        return torch.as_tensor(weights, dtype=torch.float32)

    def _scaled(self, X: np.ndarray) -> torch.Tensor:
        if self.scaler_ is not None:
            X = self.scaler_.transform(X)
        return torch.as_tensor(X, dtype=torch.float32)

    def _train(self, features: torch.Tensor, y_encoded: np.ndarray, seed: int) -> list[float]:
        module = self.module_
        targets = torch.as_tensor(y_encoded, dtype=torch.long)
        weights = self._loss_weights(y_encoded)
        optimizer = self._optimizer([p for p in module.parameters() if p.requires_grad])
        generator = torch.Generator().manual_seed(seed)
        batch_size = min(self.batch_size, len(targets))
        curve = []
        module.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(targets), generator=generator)
            total = 0.0
            for batch in order.split(batch_size):
                loss = F.cross_entropy(module(features[batch]), targets[batch], weight=weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            curve.append(total / len(targets))
        return curve

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n, len(classes_))``, columns in ``classes_`` order."""
        check_is_fitted(self, "module_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        with torch.no_grad():
            logits = self.module_(self._scaled(X))
        return torch.softmax(logits.double(), dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "module_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


# --------------------------------------------------------------------------- quantum head


@functools.lru_cache(maxsize=64)
def circuit_spec(n_qubits: int, reps: int, entanglement: str, encoding: str) -> Any:
    """The head's circuit for one shape, built once per process and shape (building the qiskit
    circuit costs more than a small training step)."""
    return build_circuit(quantum_config(n_qubits, reps, entanglement, encoding, 1.0))


def quantum_config(n_qubits: int, reps: int, entanglement: str, encoding: str,
                   angle_scale: float, torch_dtype: str = "float64") -> Any:
    """The ``QuantumConfig`` of a study head: the exact torch executor, no shots."""
    return QuantumConfig(
        n_qubits=n_qubits, reps=reps, entanglement=entanglement, encoding=encoding,
        angle_scale=angle_scale, executor="torch", torch_dtype=torch_dtype,
    )


class QuantumHeadClassifier(TorchHeadClassifier):
    """The project's quantum head as a classifier: projection, bounded angles, the circuit's
    ``<Z_i>`` on the exact torch executor, linear readout.

    Args:
        n_qubits, reps, entanglement, encoding, angle_scale: the circuit (as ``quantum.*``).
        freeze_circuit: the control: circuit weights drawn uniformly in ``[-pi, pi)`` and never
            trained, so only the projection and readout learn.
        learning_rate, epochs, batch_size, weight_decay: AdamW and the schedule.
        standardize: fit a ``StandardScaler`` on the training features and keep it.
        class_balanced: weight the loss by inverse class frequency (the trainer's rule).
        classes: the label set of the output (e.g. ``range(5)`` for all grades even when a grade
            is missing from training); ``None`` = the labels seen by ``fit``.
        torch_dtype: dtype of the statevector simulation.
        random_state: seed of the initial weights and of the batch order.
    """

    def __init__(
        self, n_qubits: int = 4, reps: int = 2, entanglement: str = "linear",
        encoding: str = "angle", angle_scale: float = 1.0, freeze_circuit: bool = False,
        learning_rate: float = 3e-3, epochs: int = 40, batch_size: int = 32,
        weight_decay: float = 0.01, standardize: bool = True, class_balanced: bool = True,
        classes: Any = None, torch_dtype: str = "float64", random_state: Any = None,
    ) -> None:
        self.n_qubits = n_qubits
        self.reps = reps
        self.entanglement = entanglement
        self.encoding = encoding
        self.angle_scale = angle_scale
        self.freeze_circuit = freeze_circuit
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.standardize = standardize
        self.class_balanced = class_balanced
        self.classes = classes
        self.torch_dtype = torch_dtype
        self.random_state = random_state

    def _build_module(self, n_features: int, n_classes: int) -> nn.Module:
        config = quantum_config(
            self.n_qubits, self.reps, self.entanglement, self.encoding, self.angle_scale,
            self.torch_dtype,
        )
        spec = circuit_spec(self.n_qubits, self.reps, self.entanglement, self.encoding)
        head = QuantumHead(n_features, config, num_classes=n_classes, spec=spec)
        if self.freeze_circuit:
            with torch.no_grad():
                head.circuit_weights.uniform_(-math.pi, math.pi)
            head.circuit_weights.requires_grad_(False)
        return head


# --------------------------------------------------------------------------- classical twin


class TwinLayer(nn.Module):
    """A classical stand-in for the circuit: ``tanh(W a + b)`` on the ``n`` angles, where only
    ``n_weights`` entries of ``(W, b)`` are trainable and the rest stay 0.

    The trainable entries fill ``W`` band by band (the diagonal, then the nearest neighbours,
    then the next, ... as linear entanglement couples neighbours) and then ``b``. Outputs lie in
    ``[-1, 1]`` like ``<Z_i>``, so the same readout follows.
    """

    def __init__(self, n: int, n_weights: int) -> None:
        super().__init__()
        if not 1 <= n_weights <= n * n + n:
            raise ValueError(
                f"A twin layer of width {n} holds 1 to {n * n + n} weights, asked for {n_weights}"
            )
        order = sorted(((i, j) for i in range(n) for j in range(n)),
                       key=lambda ij: (abs(ij[0] - ij[1]), ij[0] - ij[1] < 0, ij[0]))
        slots = [i * n + j for i, j in order] + [n * n + k for k in range(n)]
        self.n = n
        self.register_buffer("slots", torch.tensor(slots[:n_weights], dtype=torch.long))
        init = torch.randn(n_weights) * 0.1
        # Diagonal near 1/pi: each output starts as a squashed copy of its own angle.
        init[: min(n, n_weights)] += 1.0 / math.pi
        self.values = nn.Parameter(init)

    def forward(self, angles: torch.Tensor) -> torch.Tensor:
        flat = torch.zeros(self.n * self.n + self.n, dtype=angles.dtype, device=angles.device)
        flat = flat.index_put((self.slots,), self.values.to(angles.dtype))
        weight, bias = flat[: self.n * self.n].view(self.n, self.n), flat[self.n * self.n:]
        return torch.tanh(angles @ weight.T + bias)


class TwinHead(nn.Module):
    """Projection and bounded angles as the quantum head's, a :class:`TwinLayer`, same readout."""

    def __init__(self, in_features: int, n: int, n_weights: int, num_classes: int,
                 angle_scale: float) -> None:
        super().__init__()
        self.angle_scale = angle_scale
        self.projection = nn.Linear(in_features, n)
        self.layer = TwinLayer(n, n_weights)
        self.readout = nn.Linear(n, num_classes)

    def forward(self, compressed: torch.Tensor) -> torch.Tensor:
        angles = (self.angle_scale * math.pi) * torch.tanh(self.projection(compressed))
        return self.readout(self.layer(angles))


def circuit_weight_count(n_qubits: int, reps: int) -> int:
    """Trainable weights of the head's ``real_amplitudes`` ansatz: one RY per qubit per layer."""
    return n_qubits * (reps + 1)


class ClassicalTwinClassifier(TorchHeadClassifier):
    """The quantum head with its circuit swapped for a :class:`TwinLayer` of as many trainable
    weights as the circuit of ``n_qubits`` and ``reps`` has; everything else as
    :class:`QuantumHeadClassifier` (the encoding has no weights, so the twin has none of it)."""

    def __init__(
        self, n_qubits: int = 4, reps: int = 2, angle_scale: float = 1.0,
        learning_rate: float = 3e-3, epochs: int = 40, batch_size: int = 32,
        weight_decay: float = 0.01, standardize: bool = True, class_balanced: bool = True,
        classes: Any = None, random_state: Any = None,
    ) -> None:
        self.n_qubits = n_qubits
        self.reps = reps
        self.angle_scale = angle_scale
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.standardize = standardize
        self.class_balanced = class_balanced
        self.classes = classes
        self.random_state = random_state

    def _build_module(self, n_features: int, n_classes: int) -> nn.Module:
        return TwinHead(n_features, self.n_qubits, circuit_weight_count(self.n_qubits, self.reps),
                        n_classes, self.angle_scale)


# --------------------------------------------------------------------------- head B


class HeadBClassifier(TorchHeadClassifier):
    """Classical head B's architecture (two hidden GELU layers with dropout) on the features."""

    vectorisable = False  # dropout draws random masks, which torch.func.vmap refuses

    def __init__(
        self, hidden_dim: int = 128, depth: int = 2, dropout: float = 0.1,
        learning_rate: float = 3e-3, epochs: int = 40, batch_size: int = 32,
        weight_decay: float = 0.01, standardize: bool = True, class_balanced: bool = True,
        classes: Any = None, random_state: Any = None,
    ) -> None:
        self.hidden_dim = hidden_dim
        self.depth = depth
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.standardize = standardize
        self.class_balanced = class_balanced
        self.classes = classes
        self.random_state = random_state

    def _build_module(self, n_features: int, n_classes: int) -> nn.Module:
        return ClassicalHead(n_features, self.hidden_dim, n_classes, self.dropout, self.depth)
