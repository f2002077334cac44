"""The trained model plus its calibration, as one module from images to calibrated outputs.

The same module serves the Python API, the ``predict`` pipeline and the ONNX export, so the three
give the same numbers by construction.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from qsight_pipeline.constants import ENSEMBLE, HEAD_A, HEAD_B, HEADS, NUM_GRADES, REFERABLE_GRADE
from qsight_pipeline.models.fusion_rules import (  # noqa: F401  (re-exported: the graph's callers)
    FUSIONS,
    GATED,
    MEAN,
    UnknownFusionError,
    saved_fusion,
)
from qsight_pipeline.models.hybrid import HybridModel

_EPS = 1e-12

# Names of the outputs, in order (also the ONNX output names).
OUTPUT_NAMES: tuple[str, ...] = (
    "ensemble_probs",  # (B, 5) calibrated fused probabilities
    "head_probs",  # (B, 3, 5) calibrated per-head probabilities; zeros for an absent head
    "head_weights",  # (B, 3) gate weights
    "entropy",  # (B,) entropy (nats) of the calibrated ensemble: the uncertainty
    "disagreement",  # (B,) weighted Jensen-Shannon divergence between the heads
    "referable_probability",  # (B,) calibrated P(grade >= 2)
    "classical_logits",  # (B, 5) the two classical heads' mean raw logits: the energy and ViM gates read them
    "compressed_features",  # (B, compressed_dim): what a gate saved before "space" measures
    "encoder_features",  # (B, encoder width): the encoder's pooled features, what the gate measures
)


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(_EPS).log()).sum(dim=-1)


class InferenceGraph(nn.Module):
    """``images (B, 3, S, S)`` normalised -> the tensors named in :data:`OUTPUT_NAMES`.

    ``fusion``: ``gated`` fuses the heads by the model's gate (``head_weights`` its weights);
    ``mean`` by the mean of the active heads' calibrated probabilities (``head_weights`` equal,
    ``disagreement`` the Jensen-Shannon divergence of those calibrated heads). Either way the
    ensemble's temperature then applies.
    """

    def __init__(
        self, model: HybridModel, temperatures: Mapping[str, float], fusion: str = GATED
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.model = model
        self.fusion = fusion
        self.active = (True, True, model.quantum_head is not None)
        values = [float(temperatures.get(head, 1.0)) for head in HEADS]
        self.register_buffer("head_temperatures", torch.tensor(values))
        self.register_buffer("ensemble_temperature", torch.tensor(float(temperatures.get(ENSEMBLE, 1.0))))
        equal = torch.tensor([float(on) for on in self.active])
        self.register_buffer("equal_weights", equal / equal.sum())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images, active_mask=self.active)
        head_probs = []
        for index, head in enumerate(HEADS):
            logits = out.get(f"logits_{head}")
            if logits is None:
                head_probs.append(torch.zeros(images.shape[0], NUM_GRADES, device=images.device))
            else:
                head_probs.append(F.softmax(logits.float() / self.head_temperatures[index], dim=-1))
        heads = torch.stack(head_probs, dim=1)
        if self.fusion == MEAN:
            weights = self.equal_weights.expand(images.shape[0], -1)
            fused = (weights.unsqueeze(-1) * heads).sum(dim=1)
            disagreement = (_entropy(fused) - (weights * _entropy(heads)).sum(dim=1)).clamp_min(0.0)
        else:
            fused = out["fused_probs"].float()
            weights, disagreement = out["head_weights"].float(), out["disagreement"].float()
        ensemble = F.softmax(fused.clamp_min(_EPS).log() / self.ensemble_temperature, dim=-1)
        return (
            ensemble,
            heads,
            weights,
            _entropy(ensemble),
            disagreement,
            ensemble[:, REFERABLE_GRADE:].sum(dim=-1),
            # as the gate was fitted (inference.gate.ood_splits): uncalibrated, the plain mean
            (out[f"logits_{HEAD_A}"].float() + out[f"logits_{HEAD_B}"].float()) / 2,
            out["compressed"].float(),
            out["encoder_features"].float(),
        )
