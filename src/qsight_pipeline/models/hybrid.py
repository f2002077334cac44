"""The hybrid grader: timm encoder -> compression -> heads A, B and quantum -> gated ensemble.

One readable file with a dataclass config, in the nanoGPT manner. The forward pass returns a flat
dict of tensors (see docs/architecture.md, "Model") so that DataParallel can gather it and so that
per-head metrics and the ensemble stage need no second pass.

The model can start at two points: from images (every part runs), or from compressed features
(the feature-cache stages), optionally with precomputed logits for the frozen classical heads.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qsight_pipeline.config import ModelParams, QuantumConfig, validate_block
from qsight_pipeline.constants import HEADS, NUM_GRADES
from qsight_pipeline.data.preprocessing import (
    Preprocessing,
    PreprocessingError,
    from_encoder,
    from_saved,
)
from qsight_pipeline.models.encoders import (
    create_encoder,
    encoder_data_config,
    resolve_encoder_name,
)

logger = logging.getLogger(__name__)

# Keeps log(0) out of the ensemble NLL and the entropies.
_EPS = 1e-8


@dataclass
class ModelConfig:
    """Everything needed to build (and later rebuild) a :class:`HybridModel`: a view of the typed
    ``model`` block (its fields, ``preprocessing`` apart, are ``ModelParams``'s; a test keeps them
    equal) plus what the model is built with (``image_size``, ``num_classes``, ``quantum``).

    It holds no defaults of its own: :meth:`from_params` builds it from the typed ``model`` and
    ``quantum`` blocks (``config.ModelParams``, ``config.QuantumConfig``, where the defaults
    live) and the run-wide ``image_size``; a saved model's ``ModelConfig(**saved)`` rebuilds it.
    ``quantum`` is the ``quantum`` block as a plain dict, kept plain so the config survives JSON
    and ``torch.load(weights_only=True)``. ``preprocessing`` is the one pixel path's settings
    (``data.preprocessing.Preprocessing`` as a dict), resolved from the encoder when the model is
    configured; a config saved before it was recorded gets what its training used (ImageNet
    mean and std, bicubic letterbox at ``image_size``, no crop).
    """

    encoder_type: str
    encoder_name: str | None
    image_size: int
    pretrained: bool
    pretrained_weights: str | None
    compressed_dim: int
    head_hidden_dim: int
    gate_hidden_dim: int
    dropout: float
    num_classes: int
    quantum: dict[str, Any]
    preprocessing: dict[str, Any] | None = None
    # Keep the encoder as built for the whole schedule (``model.freeze_encoder``); a config saved
    # before the setting existed gets the block's default (off: it trained its encoder as its
    # stages said).
    freeze_encoder: bool = ModelParams.model_fields["freeze_encoder"].default

    def __post_init__(self) -> None:
        settings = from_saved(self.preprocessing, image_size=self.image_size)
        if settings.image_size != self.image_size:
            raise PreprocessingError(
                f"The model config's image_size {self.image_size} is not its preprocessing's "
                f"{settings.image_size}. Rebuild the model with `kedro run`."
            )
        self.preprocessing = settings.to_dict()
        if not isinstance(self.quantum, Mapping):
            # A QuantumConfig (or anything with to_dict) is accepted and stored plain.
            to_dict = getattr(self.quantum, "to_dict", None)
            self.quantum = to_dict() if to_dict else dataclasses.asdict(self.quantum)
        self.quantum = dict(self.quantum)

    @classmethod
    def from_params(
        cls,
        model_params: Any,
        quantum_params: Any,
        image_size: int | None,
        preprocessing: Preprocessing | None = None,
    ) -> ModelConfig:
        """Build from the typed ``model`` and ``quantum`` blocks (or their plain dicts) and the
        run-wide ``image_size`` (None: the encoder's own). ``quantum_params=None`` means the
        quantum head is off. The preprocessing is the encoder's (:func:`model_preprocessing`),
        or ``preprocessing`` when given (the Python API's loaders already hold its pictures).

        Raises:
            ConfigError: naming every bad ``model.*`` or ``quantum.*`` key.
        """
        model = validate_block(ModelParams, model_params, "model")
        quantum = (
            QuantumConfig.from_params(quantum_params).to_dict()
            if quantum_params is not None
            else {"enabled": False}
        )
        settings = preprocessing or model_preprocessing(model, image_size)
        fields = {key: value for key, value in model.model_dump().items() if key != "preprocessing"}
        return cls(
            **fields, image_size=settings.image_size, num_classes=NUM_GRADES, quantum=quantum,
            preprocessing=settings.to_dict(),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict; ``ModelConfig(**config.to_dict())`` rebuilds the same config."""
        return dataclasses.asdict(self)


def model_preprocessing(model_params: Any, image_size: int | None) -> Preprocessing:
    """The one pixel path's settings for the ``model`` block's encoder: timm's data config for
    its weights, ``model.preprocessing``'s overrides, and ``image_size`` (``run.image_size``;
    None: the encoder's own). Logs which size wins when both are given and differ."""
    model = validate_block(ModelParams, model_params, "model")
    name = resolve_encoder_name(model.encoder_type, model.encoder_name)
    data_config = encoder_data_config(name)
    own = int(data_config["input_size"][-1])
    if image_size is not None and int(image_size) != own:
        weights = model.pretrained or model.pretrained_weights
        fixed = data_config["fixed_input_size"]
        (logger.warning if fixed and weights else logger.info)(
            "run.image_size %d wins over %s's own input size %d%s. Set run.image_size: null to "
            "use %d.", image_size, data_config["weights"], own,
            ": its patch grid and position embeddings are resized to it" if fixed else "", own,
        )
    return from_encoder(data_config, name, image_size, model.preprocessing.model_dump())


class CompressionModule(nn.Module):
    """Encoder features -> ``compressed_dim`` features (MLP with LayerNorm and dropout).

    The final LayerNorm keeps the compressed features on a fixed scale, which the quantum head's
    bounded angle encoding and the cached-feature stages both rely on.
    """

    def __init__(self, in_features: int, compressed_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        hidden = max(2 * compressed_dim, 32)
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, compressed_dim),
            nn.LayerNorm(compressed_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class ClassicalHead(nn.Module):
    """An MLP from compressed features to grade logits; ``depth`` hidden layers."""

    def __init__(
        self,
        in_features: int,
        hidden_dim: int,
        num_classes: int = NUM_GRADES,
        dropout: float = 0.1,
        depth: int = 1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden_dim), nn.GELU(), nn.Dropout(dropout)]
            width = hidden_dim
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, compressed: torch.Tensor) -> torch.Tensor:
        return self.net(compressed)


class GatedEnsemble(nn.Module):
    """Per-sample gate over the heads; masked heads get weight exactly 0.

    The gate sees the compressed features and the active heads' probabilities (zeros for masked
    heads), so it can learn which head to trust for which kind of image.
    """

    def __init__(
        self, compressed_dim: int, hidden_dim: int = 64, num_classes: int = NUM_GRADES
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.gate = nn.Sequential(
            nn.Linear(compressed_dim + len(HEADS) * num_classes, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, len(HEADS)),
        )

    def forward(
        self,
        compressed: torch.Tensor,
        head_logits: Mapping[str, torch.Tensor],
        active: Sequence[bool],
    ) -> dict[str, torch.Tensor]:
        """Fuse the active heads.

        Args:
            compressed: (B, compressed_dim).
            head_logits: logits (B, num_classes) for every active head, keyed by head name.
            active: one flag per head in ``HEADS`` order.

        Returns:
            ``fused_probs`` (B, C), ``head_weights`` (B, 3), ``entropy`` (B,), ``disagreement`` (B,).
        """
        # The gate and the mixture run in float32 even under autocast: probabilities near 0 and
        # the entropies lose too much in half precision.
        compressed = compressed.float()
        batch = compressed.shape[0]
        probs = torch.zeros(batch, len(HEADS), self.num_classes, device=compressed.device)
        for index, head in enumerate(HEADS):
            if active[index]:
                probs[:, index] = F.softmax(head_logits[head].float(), dim=-1)
        gate_logits = self.gate(torch.cat([compressed, probs.flatten(1)], dim=1))
        mask = torch.tensor(list(active), dtype=torch.bool, device=compressed.device)
        head_weights = F.softmax(gate_logits.masked_fill(~mask, float("-inf")), dim=-1)

        fused = (head_weights.unsqueeze(-1) * probs).sum(dim=1)
        entropy = _entropy(fused)
        # Weighted Jensen-Shannon divergence: H(sum w_i p_i) - sum w_i H(p_i) >= 0, zero when the
        # active heads agree exactly (masked heads have w_i = 0 and drop out).
        head_entropy = _entropy(probs)
        disagreement = (entropy - (head_weights * head_entropy).sum(dim=1)).clamp_min(0.0)
        return {
            "fused_probs": fused,
            "head_weights": head_weights,
            "entropy": entropy,
            "disagreement": disagreement,
        }


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats over the last dimension (0 log 0 = 0)."""
    return -(probs * probs.clamp_min(_EPS).log()).sum(dim=-1)


def _build_quantum_head(config: ModelConfig) -> nn.Module | None:
    """The quantum head, or ``None`` (with a WARNING naming what is missing) when unavailable."""
    if not config.quantum.get("enabled", True):
        logger.info("Quantum head disabled (quantum.enabled is false); training classical-only.")
        return None
    try:
        # lazy: optional dependency
        from qsight_pipeline.models.quantum import (
            QuantumConfig,
            build_quantum_head,
            quantum_dependencies_missing,
        )
    except ImportError as error:
        logger.warning(
            "Quantum head unavailable (%s); continuing classical-only. "
            "Set quantum.enabled: false to silence this warning.",
            error,
        )
        return None
    quantum_config = QuantumConfig.from_params(config.quantum)
    missing = quantum_dependencies_missing(quantum_config.executor, quantum_config.shots)
    if missing:
        logger.warning(
            "Quantum head disabled: missing package(s) %s. Install them (pip install %s, or "
            'pip install -e ".[quantum]") to re-enable it; continuing classical-only.',
            ", ".join(missing),
            " ".join(missing),
        )
        return None
    return build_quantum_head(config.compressed_dim, quantum_config, num_classes=config.num_classes)


class HybridModel(nn.Module):
    """Encoder, compression, heads A/B, optional quantum head, gated ensemble.

    Attributes:
        config: the :class:`ModelConfig` it was built from.
        encoder_name: the timm name actually built.
        quantum_enabled: whether a quantum head exists (``False`` when disabled or unavailable).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder_name = resolve_encoder_name(config.encoder_type, config.encoder_name)
        self.encoder = create_encoder(
            encoder_type=config.encoder_type,
            encoder_name=config.encoder_name,
            image_size=config.image_size,
            pretrained=config.pretrained,
            pretrained_weights=config.pretrained_weights,
        )
        self.compression = CompressionModule(
            self.encoder.num_features, config.compressed_dim, config.dropout
        )
        # Two classical heads of different depth, so they make different errors for the gate to use.
        self.head_a = ClassicalHead(
            config.compressed_dim,
            config.head_hidden_dim,
            config.num_classes,
            config.dropout,
            depth=1,
        )
        self.head_b = ClassicalHead(
            config.compressed_dim,
            config.head_hidden_dim,
            config.num_classes,
            config.dropout,
            depth=2,
        )
        self.quantum_head = _build_quantum_head(config)
        self.ensemble = GatedEnsemble(
            config.compressed_dim, config.gate_hidden_dim, config.num_classes
        )

    @property
    def quantum_enabled(self) -> bool:
        return self.quantum_head is not None

    def effective_mask(
        self, active_mask: Sequence[int | bool] = (1, 1, 1)
    ) -> tuple[bool, bool, bool]:
        """The mask actually used: the quantum flag is forced off when there is no quantum head."""
        if len(active_mask) != len(HEADS):
            raise ValueError(
                f"active_mask must have {len(HEADS)} flags ({', '.join(HEADS)}), got {list(active_mask)}"
            )
        flags = [bool(flag) for flag in active_mask]
        if self.quantum_head is None:
            flags[2] = False
        if not any(flags):
            raise ValueError(
                f"active_mask {list(active_mask)} leaves no head to run"
                + (" (the quantum head is unavailable)" if active_mask[2] else "")
            )
        return flags[0], flags[1], flags[2]

    def forward(
        self,
        images: torch.Tensor | None = None,
        *,
        embeddings: torch.Tensor | None = None,
        compressed: torch.Tensor | None = None,
        head_logits: Mapping[str, torch.Tensor] | None = None,
        active_mask: Sequence[int | bool] = (1, 1, 1),
    ) -> dict[str, torch.Tensor]:
        """Run the model from images or from compressed features.

        Args:
            images: normalised float images (B, 3, H, W); runs the encoder and compression.
            embeddings: (B, encoder.num_features) outputs of the frozen encoder (the embedding
                table, ``training.embedding_cache``), to start at the compression module.
            compressed: (B, compressed_dim) features, to start after the compression module.
            head_logits: precomputed logits of frozen heads (``{"head_a": (B, 5), ...}``), used
                instead of running those heads.
            active_mask: ``(head_a, head_b, quantum_head)`` flags; masked heads are not computed
                and get gate weight 0.

        Returns:
            ``compressed``, ``logits_<head>`` for each active head, ``fused_probs``,
            ``head_weights``, ``entropy``, ``disagreement`` (docs/architecture.md), and
            ``encoder_features`` (the encoder's pooled features, before the compression
            module) when the model ran from ``images`` or ``embeddings``.
        """
        if sum(given is not None for given in (images, embeddings, compressed)) != 1:
            raise ValueError("pass exactly one of `images`, `embeddings` or `compressed`")
        if images is not None:
            embeddings = self.encoder(images)
        if embeddings is not None:
            compressed = self.compression(embeddings)
        active = self.effective_mask(active_mask)
        given = head_logits or {}

        outputs: dict[str, torch.Tensor] = {"compressed": compressed}
        if embeddings is not None:
            outputs["encoder_features"] = embeddings
        logits: dict[str, torch.Tensor] = {}
        for head, flag in zip(HEADS, active, strict=True):
            if not flag:
                continue
            if head in given and given[head] is not None:
                logits[head] = given[head]
            else:
                logits[head] = getattr(self, head)(compressed)
            outputs[f"logits_{head}"] = logits[head]
        outputs.update(self.ensemble(compressed, logits, active))
        return outputs


def build_model(config: ModelConfig) -> HybridModel:
    """Build the hybrid model described by ``config``."""
    model = HybridModel(config)
    logger.info(
        "Built HybridModel: encoder %s (%d features, %s px), compressed_dim %d, quantum head %s; "
        "%.2fM parameters",
        model.encoder_name,
        model.encoder.num_features,
        config.image_size,
        config.compressed_dim,
        "on" if model.quantum_enabled else "off",
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model
