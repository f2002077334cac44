"""How well the gate works: clean test photographs against corrupted copies, another camera's
photographs and non-fundus photographs, and how the out-of-distribution detectors compare.

Nothing is downloaded. The corruptions are made from the test split's own cached pictures
(:data:`CORRUPTIONS`); the near out-of-distribution set is the same pictures through the sample
generator's shifted camera (:data:`qsight_pipeline.data.sample.CAMERAS`); the far ones are
photographs that ship with scikit-image (:data:`TEST_PHOTOGRAPHS`, whole and cropped; left out
with a note when scikit-image is not installed) and pictures drawn here
(:func:`non_fundus_pictures`). Each picture gets the gate's score
(:func:`qsight_pipeline.inference.gate.gate_score`, > 0 when it fails); the AUROC says how well
it separates clean photographs (negatives) from each kind of bad picture (positives), and the
pass rates say what share of each set the gate lets through. Every detector of
:mod:`qsight_pipeline.inference.ood` is also scored alone on the out-of-distribution sets: AUROC
and FPR at 95% TPR (the share of a set that passes when 95% of the clean photographs do).

:data:`SELECTION_PHOTOGRAPHS` are other photographs, never used here: ``benchmarks/ood_detectors.py``
chooses the default detector on them, the validation split and its shifted-camera copies.

The pictures here are already at the model's ``image_size``, so the ``resolution`` bound (which
needs the original size) is not part of this evaluation, and focus is not judged below
:data:`~qsight_pipeline.inference.gradability.MIN_FOCUS_WIDTH` px.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from qsight_pipeline.data.image_cache import load_array
from qsight_pipeline.data.sample import CAMERAS
from qsight_pipeline.inference import gate as gating
from qsight_pipeline.inference import ood
from qsight_pipeline.inference.graph import OUTPUT_NAMES
from qsight_pipeline.inference.predict import normalise

logger = logging.getLogger(__name__)

# scikit-image's bundled non-fundus photographs: those the test uses, and those the default
# detector is chosen on (``benchmarks/ood_detectors.py``); no photograph is in both.
TEST_PHOTOGRAPHS = ("astronaut", "coffee", "chelsea", "camera", "coins", "page",
                    "immunohistochemistry", "rocket")
SELECTION_PHOTOGRAPHS = ("moon", "brick", "grass", "gravel", "clock", "text", "hubble_deep_field",
                         "colorwheel", "horse", "logo")


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


def non_fundus_photographs(
    names: Sequence[str], size: int, crops: int = 3, seed: int = 0
) -> np.ndarray | None:
    """scikit-image's photographs called ``names``, each whole and as ``crops`` random crops
    (half to four fifths of each side), letterboxed to ``size``: uint8 ``(N, size, size, 3)``.
    None when scikit-image is not installed (they ship with it; nothing is downloaded)."""
    try:
        from skimage import data  # lazy: scikit-image is an optional (dev) dependency
    except ImportError:
        return None
    rng = np.random.default_rng(seed)
    pictures = []
    for name in names:
        photograph = np.asarray(getattr(data, name)())
        if photograph.dtype == bool:
            photograph = photograph.astype(np.uint8) * 255
        pictures.append(load_array(photograph, size))
        height, width = photograph.shape[:2]
        for _ in range(crops):
            h, w = (int(side * rng.uniform(0.5, 0.8)) for side in (height, width))
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            pictures.append(load_array(np.ascontiguousarray(photograph[top : top + h, left : left + w]), size))
    return np.stack(pictures)


def shifted_camera(images: np.ndarray) -> np.ndarray:
    """The pictures as the sample generator's other camera takes them (colour balance, tone
    curve, softer lens; the eye is the same)."""
    through = CAMERAS["shifted"]
    return np.stack([np.asarray(through(Image.fromarray(np.asarray(p)))) for p in images])


def model_outputs(
    loaded: Any, images: np.ndarray, batch_size: int = 64, space: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The features of the gate's space (``space``: ``encoder`` or ``compressed``; default the
    saved gate's, :func:`~qsight_pipeline.inference.ood.ood_space`) and the classical heads' mean
    logits (what the detectors score) of uint8 pictures already at ``image_size``."""
    if space is None:
        space = ood.ood_space((loaded.gates or {}).get("ood") or {})
    index = OUTPUT_NAMES.index(ood.SPACE_OUTPUTS[space])
    logits_index = OUTPUT_NAMES.index("classical_logits")
    features, logits = [], []
    for start in range(0, len(images), batch_size):
        chunk = np.asarray(images[start : start + batch_size])
        with torch.no_grad():
            outputs = loaded.graph(normalise(chunk, loaded.preprocessing).to(loaded.device))
        features.append(outputs[index].float().cpu().numpy())
        logits.append(outputs[logits_index].float().cpu().numpy())
    if not features:
        return np.zeros((0, 1)), np.zeros((0, 1))
    return np.concatenate(features), np.concatenate(logits)


def detector_params(loaded: Any) -> dict[str, Mapping[str, Any]]:
    """Every detector's parameters for this model: those saved with the gate, energy's (it has
    none to fit), and ViM fitted on the saved training features (the k-NN bank) with the
    model's heads when a compressed-space gate was fitted without the logits (an encoder-space
    gate is fitted with them)."""
    saved = loaded.gates["ood"]["detectors"]
    params = {name: fitted["params"] for name, fitted in saved.items()}
    params.setdefault("energy", ood.DETECTORS["energy"].fit(np.zeros((1, 1))))
    on_compressed = ood.ood_space(loaded.gates["ood"]) == ood.COMPRESSED_SPACE
    if "vim" not in params and "knn" in params and on_compressed:
        bank = np.asarray(params["knn"]["bank"], dtype=np.float32)
        with torch.no_grad():
            compressed = torch.from_numpy(bank).to(loaded.device)
            heads = torch.stack([loaded.model.head_a(compressed), loaded.model.head_b(compressed)])
        params["vim"] = ood.fit_vim(bank, heads.mean(dim=0).float().cpu().numpy())
    return params


def detector_scores(
    outputs: tuple[np.ndarray, np.ndarray], params: Mapping[str, Mapping[str, Any]],
    projection: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Each detector's score of ``(features, logits)``, the features first projected by the
    gate's ``projection`` where it saved one (an encoder wider than ``ood.MAX_GATE_WIDTH``)."""
    features, logits = outputs
    features = ood.project(features, projection)
    return {name: ood.get_detector(name).score(features, logits, p) for name, p in params.items()}


def ood_metrics(inside: np.ndarray, outside: np.ndarray) -> dict[str, float | None]:
    """AUROC of a score (higher: out of distribution) and its FPR at 95% TPR: the share of
    ``outside`` at or below the score that 95% of ``inside`` stay at or below."""
    if not len(inside) or not len(outside):
        return {"auroc": None, "fpr_at_95_tpr": None}
    cut = float(np.quantile(inside, 0.95, method="higher"))
    return {"auroc": _auroc(inside, outside), "fpr_at_95_tpr": float(np.mean(outside <= cut))}


def compare_detectors(
    reference: Mapping[str, np.ndarray], sets: Mapping[str, Mapping[str, np.ndarray]]
) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{detector: {set: {auroc, fpr_at_95_tpr}}}`` of each set against the ``reference``
    (in-distribution) scores."""
    return {name: {label: ood_metrics(reference[name], scores[name]) for label, scores in sets.items()}
            for name in reference}


def gate_results(loaded: Any, images: np.ndarray, outputs: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """The gate's score, verdicts and reasons for uint8 pictures already at ``image_size``
    (``outputs``: their :func:`model_outputs`, computed when None)."""
    gates = loaded.gates
    features, logits = outputs if outputs is not None else model_outputs(loaded, images)
    values = (gating.ood_score(features, gates["ood"], logits) if gates.get("ood") and len(features)
              else [None] * len(images))
    scores, passed, reasons, flagged, gradable = [], [], [], [], []
    for picture, value in zip(images, values, strict=True):
        verdict = gating.gate_verdict(gating.quality_measures(np.asarray(picture)), value, gates)
        scores.append(verdict["gate_score"])
        gradable.append(bool(verdict["gradable"]))
        passed.append(verdict["gradable"] and verdict["in_distribution"] is not False)
        flagged.append(verdict["in_distribution"] is False)
        why = list(verdict["gradability_reasons"])
        if verdict["in_distribution"] is False:
            why.append(gating.OOD_REASON)
        reasons.append(why)
    return {"scores": np.asarray(scores), "passed": np.asarray(passed, dtype=bool), "reasons": reasons,
            "flagged_by_score": np.asarray(flagged, dtype=bool),
            "gradable": np.asarray(gradable, dtype=bool)}


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


def _set_summary(result: dict[str, Any], clean_scores: np.ndarray, family: str) -> dict[str, Any]:
    count = len(result["scores"])
    return {
        "family": family,
        "images": int(count),
        "pass_rate": float(result["passed"].mean()) if count else None,
        "flagged_by_score": float(result["flagged_by_score"].mean()) if count else None,
        "auroc": _auroc(clean_scores, result["scores"]),
        "reasons": _reason_counts(result["reasons"]),
    }


def _bad_sets(clean_images: np.ndarray, size: int, seed: int) -> dict[str, tuple[str, np.ndarray]]:
    """``{set name: (family, pictures)}``: corrupted copies, the shifted camera's copies, the
    test photographs and the drawn pictures."""
    rng = np.random.default_rng(seed)
    sets: dict[str, tuple[str, np.ndarray]] = {}
    if len(clean_images):
        for kind, corrupt in CORRUPTIONS.items():
            sets[f"corrupted:{kind}"] = ("corrupted", np.stack([corrupt(p, rng) for p in clean_images]))
        sets["near_ood:shifted_camera"] = ("near_ood", shifted_camera(clean_images))
    photographs = non_fundus_photographs(TEST_PHOTOGRAPHS, size, seed=seed)
    if photographs is not None:
        sets["non_fundus:photographs"] = ("non_fundus", photographs)
    for kind, pictures in non_fundus_pictures(max(1, len(clean_images) // 4), size, seed).items():
        sets[f"non_fundus:{kind}"] = ("non_fundus", pictures)
    return sets


def evaluate_gate(loaded: Any, test_images: np.ndarray, limit: int = 64, seed: int = 0) -> dict[str, Any]:
    """The gate on the clean test pictures, corrupted copies, the shifted camera's copies and
    non-fundus pictures, and the detectors compared.

    Returns ``{"clean", "corrupted", "near_ood", "non_fundus", "sets", "detectors", "note"}``:
    for each set the image count, ``pass_rate``, ``flagged_by_score`` (share the
    out-of-distribution score alone stops), the ``auroc`` of the gate's score against the clean
    pictures and the most common reasons; pooled per family; and ``detectors``: each detector's
    AUROC and FPR at 95% TPR on the out-of-distribution sets against the clean pictures.
    """
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.permutation(len(test_images))[: min(limit, len(test_images))])
    clean_images = np.asarray(test_images[rows]) if len(rows) else np.zeros((0, 1, 1, 3), np.uint8)
    size = int(loaded.preprocessing["image_size"])
    params = detector_params(loaded) if loaded.gates.get("ood") else {}
    clean_outputs = model_outputs(loaded, clean_images)
    clean = gate_results(loaded, clean_images, clean_outputs)
    sets, pooled, by_detector = {}, {}, {}
    for name, (family, pictures) in _bad_sets(clean_images, size, seed).items():
        outputs = model_outputs(loaded, pictures)
        result = gate_results(loaded, pictures, outputs)
        sets[name] = _set_summary(result, clean["scores"], family)
        pooled.setdefault(family, []).append(result)
        if family != "corrupted" and params:
            by_detector[name] = detector_scores(outputs, params, loaded.gates["ood"].get("projection"))
    summary: dict[str, Any] = {
        "clean": {"images": int(len(clean["scores"])),
                  "pass_rate": float(clean["passed"].mean()) if len(clean["scores"]) else None,
                  # The shares external validation compares its own with (inference.external).
                  "gradable_rate": float(clean["gradable"].mean()) if len(clean["scores"]) else None,
                  "in_distribution_rate": (float(1.0 - clean["flagged_by_score"].mean())
                                           if len(clean["scores"]) else None),
                  "reasons": _reason_counts(clean["reasons"])},
        "sets": sets,
        "detectors": _detector_summary(loaded, params, clean_outputs, by_detector),
        "note": "pictures at the model's image_size: the resolution bound is not part of this evaluation",
    }
    for family in ("corrupted", "near_ood", "non_fundus"):
        results = pooled.get(family)
        summary[family] = None if not results else _set_summary(
            {key: (np.concatenate([r[key] for r in results]) if key != "reasons" else
                   [why for r in results for why in r["reasons"]])
             for key in ("scores", "passed", "flagged_by_score", "reasons")},
            clean["scores"], family,
        )
    return summary


def _detector_summary(
    loaded: Any, params: Mapping[str, Mapping[str, Any]], clean_outputs: tuple[np.ndarray, np.ndarray],
    by_detector: Mapping[str, Mapping[str, np.ndarray]],
) -> dict[str, Any] | None:
    if not params or not len(clean_outputs[0]):
        return None
    reference = detector_scores(clean_outputs, params, loaded.gates["ood"].get("projection"))
    return {
        "in_use": loaded.gates["ood"]["detector"],
        "space": ood.ood_space(loaded.gates["ood"]),
        "reference": "the clean test pictures",
        "results": compare_detectors(reference, by_detector),
        "fitted_at_evaluation": sorted(set(params) - set(loaded.gates["ood"]["detectors"])),
    }
