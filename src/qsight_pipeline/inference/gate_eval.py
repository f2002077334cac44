"""How well the gate works: clean test photographs against corrupted copies and non-fundus pictures.

Nothing is downloaded: the corruptions are made from the test split's own cached pictures
(:data:`CORRUPTIONS`) and the non-fundus pictures are drawn here (:func:`non_fundus_pictures`:
gradients, checkerboards, noise, text-like shapes, blank frames). Each picture gets the gate's
score (:func:`qsight_pipeline.inference.gate.gate_score`, > 0 when it fails); the AUROC says how
well the score separates clean photographs (negatives) from each kind of bad picture (positives),
and the pass rates say what share of each set the gate lets through at the saved bounds.

The pictures here are already at the model's ``image_size``, so the ``resolution`` bound (which
needs the original size) is not part of this evaluation, and focus is not judged below
:data:`~qsight_pipeline.inference.gradability.MIN_FOCUS_WIDTH` px.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from qsight_pipeline.inference import gate as gating
from qsight_pipeline.inference.predict import normalise


def _blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = image.shape[0] / 16
    return ndimage.gaussian_filter(image.astype(np.float32), sigma=(sigma, sigma, 0)).astype(np.uint8)


def _dark(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (image.astype(np.float32) * 0.2).astype(np.uint8)


def _bright(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two stops too much light: four times the exposure, clipped."""
    return np.clip(image.astype(np.float32) * 4.0, 0, 255).astype(np.uint8)


def _half_dark(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The left half of the frame at a quarter of its light (a small pupil, a shadow)."""
    shaded = image.astype(np.float32)
    shaded[:, : image.shape[1] // 2] *= 0.25
    return shaded.astype(np.uint8)


def _field_cropped(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    margin = size // 4
    crop = image[margin : size - margin, margin : size - margin]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BICUBIC))


def _noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = image.astype(np.float32) + rng.normal(0.0, 60.0, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


CORRUPTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "heavy_blur": _blur,
    "underexposed": _dark,
    "overexposed": _bright,
    "field_cropped_out": _field_cropped,
    "half_darkened": _half_dark,
    "random_noise": _noise,
}


def non_fundus_pictures(count: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` pictures of each kind, uint8 ``(count, size, size, 3)``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    kinds: dict[str, list[np.ndarray]] = {k: [] for k in ("gradient", "checkerboard", "noise", "text", "blank")}
    for _ in range(count):
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        angle = rng.uniform(0, np.pi)
        t = np.clip(np.cos(angle) * x + np.sin(angle) * y, 0, 1)[..., None]
        kinds["gradient"].append((a * (1 - t) + b * t).astype(np.uint8))
        cell = int(rng.integers(2, max(3, size // 4)))
        board = ((np.arange(size)[:, None] // cell + np.arange(size)[None, :] // cell) % 2)[..., None]
        kinds["checkerboard"].append(np.where(board, a, b).astype(np.uint8))
        kinds["noise"].append(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        page = Image.new("RGB", (size, size), tuple(int(v) for v in rng.uniform(180, 255, 3)))
        draw = ImageDraw.Draw(page)
        for _ in range(int(rng.integers(4, 12))):  # lines of "words": short dark bars and glyphs
            top = int(rng.integers(0, size))
            left = int(rng.integers(0, size // 2))
            ink = tuple(int(v) for v in rng.uniform(0, 90, 3))
            draw.rectangle([left, top, left + int(rng.integers(size // 8, size // 2)),
                            top + max(1, size // 24)], fill=ink)
            draw.text((left, min(top + 2, size - 1)), "AbC 12", fill=ink)
        kinds["text"].append(np.asarray(page))
        kinds["blank"].append(np.full((size, size, 3), int(rng.integers(0, 256)), dtype=np.uint8))
    return {kind: np.stack(pictures) for kind, pictures in kinds.items()}


def gate_results(loaded: Any, images: np.ndarray, batch_size: int = 64) -> dict[str, Any]:
    """The gate's score, verdicts and reasons for uint8 pictures already at ``image_size``."""
    gates = loaded.gates
    scores, passed, reasons = [], [], []
    for start in range(0, len(images), batch_size):
        chunk = np.asarray(images[start : start + batch_size])
        with torch.no_grad():
            outputs = loaded.graph(normalise(chunk, loaded.preprocessing).to(loaded.device))
        features = outputs[-1].float().cpu().numpy()
        distances = gating.mahalanobis(features, gates["ood"]) if gates.get("ood") else [None] * len(chunk)
        for picture, distance in zip(chunk, distances, strict=True):
            verdict = gating.gate_verdict(gating.quality_measures(picture), distance, gates)
            scores.append(verdict["gate_score"])
            passed.append(verdict["gradable"] and verdict["in_distribution"] is not False)
            why = list(verdict["gradability_reasons"])
            if verdict["in_distribution"] is False:
                why.append(gating.OOD_REASON)
            reasons.append(why)
    return {"scores": np.asarray(scores), "passed": np.asarray(passed, dtype=bool), "reasons": reasons}


def _auroc(clean: np.ndarray, bad: np.ndarray) -> float | None:
    if not len(clean) or not len(bad):
        return None
    labels = np.r_[np.zeros(len(clean)), np.ones(len(bad))]
    return float(roc_auc_score(labels, np.r_[clean, bad]))


def _reason_counts(reasons: list[list[str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for why in reasons:
        for reason in {r.split(" [")[0] for r in why}:
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def evaluate_gate(loaded: Any, test_images: np.ndarray, limit: int = 64, seed: int = 0) -> dict[str, Any]:
    """The gate on the clean test pictures, corrupted copies and non-fundus pictures.

    Returns ``{"clean": {...}, "corrupted": {...}, "non_fundus": {...}, "sets": {name: {...}}}``:
    for each set the image count, ``pass_rate`` and the most common reasons; for the bad sets
    the ``auroc`` against the clean pictures (and per kind under ``sets``).
    """
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.permutation(len(test_images))[: min(limit, len(test_images))])
    clean_images = np.asarray(test_images[rows]) if len(rows) else np.zeros((0, 1, 1, 3), np.uint8)
    size = int(loaded.preprocessing["image_size"])
    clean = gate_results(loaded, clean_images)
    sets: dict[str, dict[str, Any]] = {}

    def summarise(name: str, result: dict[str, Any], family: str) -> None:
        sets[name] = {
            "family": family,
            "images": int(len(result["scores"])),
            "pass_rate": float(result["passed"].mean()) if len(result["scores"]) else None,
            "auroc": _auroc(clean["scores"], result["scores"]),
            "reasons": _reason_counts(result["reasons"]),
        }

    pooled: dict[str, list[dict[str, Any]]] = {"corrupted": [], "non_fundus": []}
    for kind, corrupt in CORRUPTIONS.items():
        result = gate_results(loaded, np.stack([corrupt(p, rng) for p in clean_images])) if len(clean_images) else None
        if result is not None:
            summarise(f"corrupted:{kind}", result, "corrupted")
            pooled["corrupted"].append(result)
    per_kind = max(1, len(clean_images) // 4)
    for kind, pictures in non_fundus_pictures(per_kind, size, seed).items():
        result = gate_results(loaded, pictures)
        summarise(f"non_fundus:{kind}", result, "non_fundus")
        pooled["non_fundus"].append(result)

    summary: dict[str, Any] = {
        "clean": {
            "images": int(len(clean["scores"])),
            "pass_rate": float(clean["passed"].mean()) if len(clean["scores"]) else None,
            "reasons": _reason_counts(clean["reasons"]),
        },
        "sets": sets,
        "note": "pictures at the model's image_size: the resolution bound is not part of this evaluation",
    }
    for family, results in pooled.items():
        if not results:
            summary[family] = None
            continue
        scores = np.concatenate([r["scores"] for r in results])
        passed = np.concatenate([r["passed"] for r in results])
        summary[family] = {
            "images": int(len(scores)),
            "pass_rate": float(passed.mean()),
            "auroc": _auroc(clean["scores"], scores),
        }
    return summary
