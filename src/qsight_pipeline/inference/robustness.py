"""Do grades survive benign changes to the photograph? The test split, changed three ways.

A photograph of the same eye arrives re-compressed, at a slightly different size or a little
brighter, with no clinical difference. A grader whose answer moves with such changes is answering
something other than the eye. :func:`measure_robustness` grades the test split's pictures (the
image cache, the model's input size) as they are and after each change:

- ``jpeg_quality_90``: re-saved as a JPEG at quality 90 (Pillow) and decoded again;
- ``resize_2_percent``: resized to 98% of its side and back (Pillow, the model's interpolation),
  what a photograph 2% smaller loses on the way to the model's input;
- ``brightness_5_percent``: brightness times 1.05 (torchvision's ``adjust_brightness``).

For each it gives the share of photographs whose grade changes and whose referral changes, and a
sentence that says, in words, whether the model's grades flip.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from qsight_pipeline.inference.graph import OUTPUT_NAMES
from qsight_pipeline.inference.loading import LoadedModel
from qsight_pipeline.inference.predict import normalise

# Grade changes up to this share of the test split read as "rare"; above it, as flipping.
RARE_SHARE = 0.01
BRIGHTNESS_FACTOR = 1.05
RESIZE_FACTOR = 0.98
JPEG_QUALITY = 90

_RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}


def jpeg_quality_90(picture: np.ndarray, interpolation: str = "bicubic") -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def resize_2_percent(picture: np.ndarray, interpolation: str = "bicubic") -> np.ndarray:
    side = picture.shape[0]
    method = _RESAMPLING.get(interpolation, Image.Resampling.BICUBIC)
    smaller = Image.fromarray(picture).resize((round(side * RESIZE_FACTOR),) * 2, method)
    return np.asarray(smaller.resize((side, side), method), dtype=np.uint8)


def brightness_5_percent(picture: np.ndarray, interpolation: str = "bicubic") -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1)
    return TF.adjust_brightness(tensor, BRIGHTNESS_FACTOR).permute(1, 2, 0).numpy()


# name -> (what it does, in words; the change)
PERTURBATIONS: dict[str, tuple[str, Callable[[np.ndarray, str], np.ndarray]]] = {
    "jpeg_quality_90": ("re-saved as JPEG at quality 90", jpeg_quality_90),
    "resize_2_percent": ("resized by 2%", resize_2_percent),
    "brightness_5_percent": ("made 5% brighter", brightness_5_percent),
}


@torch.no_grad()
def grade_pictures(loaded: LoadedModel, pictures: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """``grade`` (argmax of the calibrated ensemble) and ``refer`` of uint8 ``(N, S, S, 3)``
    pictures, as ``predict`` decides them before its gate."""
    grades, refer = [], []
    threshold = float(loaded.referral.get("threshold", 0.5))
    for start in range(0, len(pictures), batch_size):
        batch = normalise(np.asarray(pictures[start : start + batch_size]), loaded.preprocessing)
        outputs = loaded.graph(batch.to(loaded.device))
        ensemble, referable = outputs[0], outputs[OUTPUT_NAMES.index("referable_probability")]
        grades.append(ensemble.argmax(dim=1).cpu().numpy())
        refer.append((referable >= threshold).cpu().numpy())
    return {"grade": np.concatenate(grades), "refer": np.concatenate(refer)}


def measure_robustness(
    loaded: LoadedModel, pictures: np.ndarray | None, limit: int | None = None
) -> dict[str, Any]:
    """The shares of test pictures whose grade and referral change under each benign change.

    Returns ``{"images", "changes": {name: {"description", "grade_changed", "grades_changed",
    "referral_changed"}}, "grades_flip", "verdict"}``; ``grade_changed`` and
    ``referral_changed`` are shares (0 to 1), ``grades_changed`` a count. No pictures (None or
    none in the test split): nothing is measured, and the verdict says so.
    """
    if pictures is None or not len(pictures):
        return {"images": 0, "changes": {}, "grades_flip": False,
                "verdict": robustness_verdict(0, {})}
    pictures = np.asarray(pictures[:limit] if limit else pictures)
    interpolation = str(loaded.preprocessing.get("interpolation") or "bicubic")
    base = grade_pictures(loaded, pictures)
    changes: dict[str, dict[str, Any]] = {}
    for name, (description, change) in PERTURBATIONS.items():
        changed = np.stack([change(picture, interpolation) for picture in pictures])
        graded = grade_pictures(loaded, changed)
        flips = int((graded["grade"] != base["grade"]).sum())
        changes[name] = {
            "description": description,
            "grade_changed": flips / len(pictures),
            "grades_changed": flips,
            "referral_changed": float((graded["refer"] != base["refer"]).mean()),
        }
    worst = max((c["grade_changed"] for c in changes.values()), default=0.0)
    return {
        "images": len(pictures),
        "changes": changes,
        "grades_flip": worst > RARE_SHARE,
        "verdict": robustness_verdict(len(pictures), changes),
    }


def robustness_verdict(images: int, changes: dict[str, dict[str, Any]]) -> str:
    """One sentence: do the model's grades flip under benign changes to the photograph?"""
    if not images:
        return "No test photographs were available, so robustness was not measured."
    moved = {name: c for name, c in changes.items() if c["grades_changed"]}
    if not moved:
        return (
            f"Stable: none of the {images} test photographs changed grade when re-saved as JPEG "
            "at quality 90, resized by 2% or made 5% brighter."
        )
    parts = "; ".join(
        f"{c['grades_changed']} of {images} ({c['grade_changed']:.1%}) when {c['description']}"
        for c in moved.values()
    )
    if max(c["grade_changed"] for c in moved.values()) <= RARE_SHARE:
        return f"Mostly stable: a few grades changed under benign changes ({parts})."
    return (
        f"Grades flip under benign changes to the photograph: {parts}. A grade that moves when "
        "the same photograph is saved or lit slightly differently is not a reading of the eye "
        "alone; check how photographs reach the model before trusting single grades."
    )
