"""Saliency maps with the maintained ``grad-cam`` package (pytorch-grad-cam).

HiResCAM (Draelos & Carin 2020: gradients times activations element-wise, so the map shows what
the score actually sums, where Grad-CAM averages the gradients over the map first) on:

- CNN encoders: the encoder's last two stages (timm's ``feature_info`` names them, e.g.
  ``layer3`` and ``layer4`` of a ResNet), averaged. The last stage alone is a 7x7 grid at 224 px
  (4x4 at 128 px); the stage before it doubles the resolution, the last one keeps the semantics.
- ViT encoders: the last block's first norm, with the package's ViT reshape transform (tokens
  back to the patch grid).

The target contrasts the predicted grade with "No DR" in the heads' gate-weighted logits (the
package's ``FinerWeightedTarget``): the map answers "what in this photograph makes it grade g
rather than healthy", i.e. the lesions. The plain logit of a grade also carries what every grade
shares (the fundus itself), which spreads the map over the whole field. For a "No DR" prediction
the contrast is with the other grades, weighted by their probabilities. Logits rather than
probabilities, as Grad-CAM intends: a confident probability saturates and its gradient vanishes.
Figures: docs/grading.md, "Heatmaps"; test: tests/test_inference_heatmaps.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from qsight_pipeline.constants import HEADS, NUM_GRADES
from qsight_pipeline.data.preprocessing import Preprocessing, from_saved, scaled_side
from qsight_pipeline.errors import UserError
from qsight_pipeline.inference.graph import InferenceGraph


class HeatmapUnavailableError(UserError):
    """Heatmaps need the optional ``grad-cam`` package, or an encoder it knows."""


class _GatedLogits(nn.Module):
    """Images -> the gate-weighted sum of the active heads' logits (what Grad-CAM differentiates)."""

    def __init__(self, graph: InferenceGraph) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        model = self.graph.model
        out = model(images, active_mask=self.graph.active)
        weights = out["head_weights"]
        return sum(
            weights[:, index : index + 1] * out[f"logits_{head}"].float()
            for index, head in enumerate(HEADS)
            if f"logits_{head}" in out
        )


def _vit_reshape(tokens: torch.Tensor, *, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    # lazy: optional dependency
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    # The package's transform drops one class token; drop any further prefix tokens first.
    return vit_reshape_transform(tokens[:, prefix - 1 :, :], height=grid[0], width=grid[1])


def target_layers(encoder: nn.Module) -> tuple[list[nn.Module], Callable | None]:
    """The layers Grad-CAM reads and the reshape transform they need (``None`` for CNNs)."""
    blocks = getattr(encoder, "blocks", None)
    patch_embed = getattr(encoder, "patch_embed", None)
    if blocks is not None and patch_embed is not None:  # a timm ViT
        grid = tuple(int(g) for g in patch_embed.grid_size)
        prefix = int(getattr(encoder, "num_prefix_tokens", 1))
        return [blocks[-1].norm1], functools.partial(_vit_reshape, prefix=prefix, grid=grid)
    feature_info = getattr(encoder, "feature_info", None)
    if feature_info:
        # The last two stages, e.g. "layer3" and "layer4" (ResNet) or "stages.2" and "stages.3".
        return [_stage(encoder, info["module"]) for info in list(feature_info)[-2:]], None
    raise HeatmapUnavailableError(
        f"No Grad-CAM target layer known for the encoder {type(encoder).__name__}; heatmaps work "
        "for timm CNNs and ViTs. Set predict.heatmaps: false."
    )


def _stage(encoder: nn.Module, name: str) -> nn.Module:
    try:
        return encoder.get_submodule(name)
    except AttributeError:
        return encoder.get_submodule(name.replace("_", "."))


def grade_target(grade: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Evidence for ``grade`` against "No DR" (or, for "No DR", against the other grades)."""
    # lazy: optional dependency
    from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget

    others = [0] if grade > 0 else list(range(1, NUM_GRADES))
    return FinerWeightedTarget(grade, others, alpha=1.0)


def grad_cam_maps(graph: InferenceGraph, images: torch.Tensor, grades: list[int]) -> np.ndarray:
    """``(B, S, S)`` maps in [0, 1], one per image, for the given grade of each image."""
    try:
        # lazy: optional dependency
        from pytorch_grad_cam import HiResCAM
    except ImportError:
        raise HeatmapUnavailableError(
            "Heatmaps need the grad-cam package: pip install 'qsight_pipeline[inference]' "
            "(or grad-cam), or set predict.heatmaps: false."
        ) from None
    layers, reshape = target_layers(graph.model.encoder)
    with HiResCAM(model=_GatedLogits(graph), target_layers=layers, reshape_transform=reshape) as cam:
        maps = cam(input_tensor=images, targets=[grade_target(int(g)) for g in grades])
    return np.asarray(maps, dtype=np.float32)


def in_letterbox_frame(maps: np.ndarray, preprocessing: Preprocessing | dict) -> np.ndarray:
    """``(B, S, S)`` maps of the model's pictures, moved into the frame of the whole letterboxed
    photograph at the same side (what :func:`overlay` and the lesion masks use): the model saw the
    centre ``crop_pct`` of it, and the cropped-off border gets 0. Unchanged without a crop."""
    settings = from_saved(preprocessing)
    size = settings.image_size
    scaled = scaled_side(size, settings.crop_pct)
    if scaled == size:
        return maps
    inner = max(1, round(size * size / scaled))
    offset = round(round((scaled - size) / 2.0) * size / scaled)
    framed = np.zeros_like(maps)
    for index, heatmap in enumerate(maps):
        shrunk = Image.fromarray(np.asarray(heatmap, dtype=np.float32), mode="F").resize(
            (inner, inner), Image.Resampling.BILINEAR)
        framed[index, offset : offset + inner, offset : offset + inner] = np.asarray(shrunk)
    return framed


def overlay(photograph: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The heatmap (resized to the photograph) blended over it, as a uint8 RGB array."""
    # lazy: optional dependency
    from pytorch_grad_cam.utils.image import show_cam_on_image

    height, width = photograph.shape[:2]
    resized = Image.fromarray(np.asarray(heatmap, dtype=np.float32), mode="F").resize(
        (width, height), Image.Resampling.BILINEAR
    )
    mask = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    return show_cam_on_image(photograph.astype(np.float32) / 255.0, mask, use_rgb=True, image_weight=0.6)
