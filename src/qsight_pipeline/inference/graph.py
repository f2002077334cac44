"""The trained model plus its calibration, as one module from images to calibrated outputs.

The same module serves the Python API, the ``predict`` pipeline and the ONNX export, so the three
give the same numbers by construction.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from qsight_pipeline.constants import ENSEMBLE, HEADS, NUM_GRADES, REFERABLE_GRADE
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
    "compressed_features",  # (B, compressed_dim): what the out-of-distribution gate measures
)


class InferenceGraph(nn.Module):
    """``images (B, 3, S, S)`` normalised -> the tensors named in :data:`OUTPUT_NAMES`."""

    def __init__(self, model: HybridModel, temperatures: Mapping[str, float]) -> None:
        super().__init__()
        self.model = model
        self.active = (True, True, model.quantum_head is not None)
        values = [float(temperatures.get(head, 1.0)) for head in HEADS]
        self.register_buffer("head_temperatures", torch.tensor(values))
        self.register_buffer("ensemble_temperature", torch.tensor(float(temperatures.get(ENSEMBLE, 1.0))))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images, active_mask=self.active)
        head_probs = []
        for index, head in enumerate(HEADS):
            logits = out.get(f"logits_{head}")
            if logits is None:
                head_probs.append(torch.zeros(images.shape[0], NUM_GRADES, device=images.device))
            else:
                head_probs.append(F.softmax(logits.float() / self.head_temperatures[index], dim=-1))
        log_fused = out["fused_probs"].float().clamp_min(_EPS).log()
        ensemble = F.softmax(log_fused / self.ensemble_temperature, dim=-1)
        entropy = -(ensemble * ensemble.clamp_min(_EPS).log()).sum(dim=-1)
        return (
            ensemble,
            torch.stack(head_probs, dim=1),
            out["head_weights"].float(),
            entropy,
            out["disagreement"].float(),
            ensemble[:, REFERABLE_GRADE:].sum(dim=-1),
            out["compressed"].float(),
        )
