"""The gate in front of the grader: is a photograph gradable, and does it look like the training data?

Two checks run on every photograph before its grade is trusted:

- **Gradability**, on the decoded (letterboxed, ``image_size``) picture and the original size:
  the round fundus field is found (``field_fraction``: share of the frame whose red channel is
  above a dark level; ``field_roundness``: how much of the field lies in the disc of the same
  area around its centre), exposure (``brightness``: mean luminance inside the field;
  ``saturated_fraction``: share of field pixels clipped white), focus (``focus``: log10 of 1 + the
  variance of the Laplacian inside the eroded field) and ``resolution`` (the shorter side of the
  original picture, in pixels).
- **Out of distribution**: the Mahalanobis distance of the model's compressed features from the
  training split's (mean and Ledoit-Wolf shrunk covariance of the feature cache).

The bounds are fitted on the training split at training time (:func:`fit_gradability`,
:func:`fit_ood`), saved in ``model_info["gates"]`` as plain numbers and read back with the model.
An image outside any bound is *not* given a grade: it is referred for manual grading.

:func:`gate_score` is one number per image, positive exactly when the image fails the gate (the
largest violation of any bound, in units of that bound's training spread), so the gate can be
scored with an ROC curve (:mod:`qsight_pipeline.inference.gate_eval`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.stats import beta
from sklearn.covariance import LedoitWolf

from qsight_pipeline.config.gate import GateParams

logger = logging.getLogger(__name__)

GATES_FORMAT = "qsight.gates/1"
MANUAL_GRADING = "refer for manual grading"
# Red channel level (0-255) above which a pixel belongs to the fundus field.
FIELD_LEVEL = 20
SATURATED_LEVEL = 250

# Each measure: which sides are bounded, and the smallest spread a bound's margin is taken of
# (so a measure that is constant on the training split still gets some room).
MEASURES: dict[str, dict[str, Any]] = {
    "field_fraction": {"sides": ("min", "max"), "min_spread": 0.02},
    "field_roundness": {"sides": ("min",), "min_spread": 0.02},
    "brightness": {"sides": ("min", "max"), "min_spread": 5.0},
    "saturated_fraction": {"sides": ("max",), "min_spread": 0.02},
    "focus": {"sides": ("min", "max"), "min_spread": 0.1},
    "resolution": {"sides": ("min",), "min_spread": None},  # None: 10% of the low quantile
}
# What a failed bound means, in the words the rows and the report use.
REASONS: dict[tuple[str, str], str] = {
    ("field_fraction", "min"): "no fundus field found (too little of the frame is lit)",
    ("field_fraction", "max"): "no dark surround around the fundus field (field cropped or not a fundus photograph)",
    ("field_roundness", "min"): "the lit area is not a round fundus field",
    ("brightness", "min"): "underexposed (too dark)",
    ("brightness", "max"): "overexposed (too bright)",
    ("saturated_fraction", "max"): "overexposed (blown-out highlights)",
    ("focus", "min"): "out of focus (blurred)",
    ("focus", "max"): "noisy or not a fundus photograph (far more fine detail than training images)",
    ("resolution", "min"): "resolution too low",
}
OOD_REASON = "out of distribution (unlike the training photographs)"


# --- measures ---------------------------------------------------------------------------------


def quality_measures(image: np.ndarray, original_size: Sequence[int] | None = None) -> dict[str, float]:
    """The gradability measures of one decoded uint8 ``(S, S, 3)`` picture.

    ``original_size`` is ``(width, height)`` of the picture before it was resized; without it
    ``resolution`` is NaN (and its bound is not applied).
    """
    array = np.asarray(image)
    red = array[..., 0].astype(np.float32)
    gray = array.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    field = red > FIELD_LEVEL
    count = int(field.sum())
    measures = {
        "field_fraction": count / field.size,
        "field_roundness": _roundness(field),
        "brightness": float(gray[field].mean()) if count else 0.0,
        "saturated_fraction": float((array[field] >= SATURATED_LEVEL).all(axis=-1).mean()) if count else 0.0,
        "focus": _focus(gray, field),
        "resolution": float(min(original_size)) if original_size else float("nan"),
    }
    return {key: float(value) for key, value in measures.items()}


def _roundness(field: np.ndarray) -> float:
    """Share of the field inside the disc of equal area centred on the field's centroid."""
    count = int(field.sum())
    if count == 0:
        return 0.0
    rows, cols = np.nonzero(field)
    radius = np.sqrt(count / np.pi)
    inside = (rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2 <= radius**2
    return float(inside.mean())


def _focus(gray: np.ndarray, field: np.ndarray) -> float:
    """log10(1 + variance of the Laplacian) inside the field, its rim left out."""
    depth = max(1, round(field.shape[0] / 32))
    inner = ndimage.binary_erosion(field, iterations=depth + 1)
    if int(inner.sum()) < 4:
        return 0.0
    laplacian = ndimage.laplace(gray)
    return float(np.log10(1.0 + laplacian[inner].var()))


def original_size(image: Any) -> tuple[int, int] | None:
    """``(width, height)`` of a file (from its header) or an array, None if unknown."""
    if isinstance(image, np.ndarray):
        return (int(image.shape[1]), int(image.shape[0])) if image.ndim >= 2 else None

    try:
        with Image.open(image) as picture:
            return picture.size
    except Exception:  # noqa: BLE001 - the decoder reports unreadable files itself
        return None


# --- fitting ----------------------------------------------------------------------------------


def fit_gradability(
    measures: Iterable[Mapping[str, float]], quantile: float = 0.01, margin: float = 0.25,
    source: str = "",
) -> dict[str, Any]:
    """Bounds on each measure from the training split's own distribution.

    A lower bound is the ``quantile`` of the training values minus ``margin`` times their spread
    (the ``quantile`` to ``1 - quantile`` range, at least the measure's ``min_spread``); an upper
    bound the ``1 - quantile`` one plus the same. A measure with no finite training value (the
    resolution when the original files are gone) gets no bounds.
    """
    table = {name: [] for name in MEASURES}
    for row in measures:
        for name in MEASURES:
            table[name].append(float(row.get(name, float("nan"))))
    bounds: dict[str, dict[str, float | None]] = {}
    count = 0
    for name, spec in MEASURES.items():
        values = np.asarray(table[name], dtype=np.float64)
        values = values[np.isfinite(values)]
        count = max(count, len(values))
        if not len(values):
            bounds[name] = {"min": None, "max": None}
            continue
        low, high = (float(v) for v in np.quantile(values, [quantile, 1.0 - quantile]))
        floor = spec["min_spread"] if spec["min_spread"] is not None else 0.1 * abs(low)
        spread = max(high - low, floor)
        bounds[name] = {
            "min": low - margin * spread if "min" in spec["sides"] else None,
            "max": high + margin * spread if "max" in spec["sides"] else None,
            "spread": spread,
            "train_quantiles": [low, high],
        }
    return {
        "bounds": bounds,
        "quantile": quantile,
        "margin": margin,
        "images": count,
        "fitted_on": source,
        "field_level": FIELD_LEVEL,
        "saturated_level": SATURATED_LEVEL,
    }


def fit_ood(
    train_features: np.ndarray, val_features: np.ndarray, pass_rate: float = 0.95,
    confidence: float | None = 0.9,
) -> dict[str, Any]:
    """Mahalanobis distance from the training features; threshold so ``pass_rate`` of new
    in-distribution photographs pass.

    The covariance is scikit-learn's Ledoit-Wolf shrinkage estimate (well conditioned with few
    images per feature). Saved as plain lists: ``mean``, ``precision`` (inverse covariance).
    The threshold is a rank of the validation distances (:func:`conformal_threshold`).
    """
    train = np.asarray(train_features, dtype=np.float64)
    estimator = LedoitWolf().fit(train)
    ood = {
        "method": "Mahalanobis distance, Ledoit-Wolf covariance of the training split's compressed features",
        "mean": estimator.location_.tolist(),
        "precision": estimator.precision_.tolist(),
        "pass_rate": pass_rate,
        "confidence": confidence,
        "train_images": int(len(train)),
    }
    val = np.asarray(val_features, dtype=np.float64)
    reference = val if len(val) else train
    distances = mahalanobis(reference, ood)
    ood["threshold"], ood["rank"], ood["guaranteed"] = conformal_threshold(distances, pass_rate, confidence)
    if not ood["guaranteed"]:
        logger.warning(
            "With %d validation photographs the out-of-distribution threshold cannot promise that "
            "%.0f%% of new in-distribution photographs pass (at %.0f%% confidence); it is the "
            "largest validation distance (about %.1f%% pass on average). More validation images, "
            "or a lower gate.ood_pass_rate / gate.ood_confidence, make the promise possible.",
            len(distances), 100 * pass_rate, 100 * (confidence or 0),
            100 * len(distances) / (len(distances) + 1),
        )
    ood["validation_images"] = int(len(val))
    ood["validation_pass_rate"] = float(np.mean(distances <= ood["threshold"]))
    return ood


def conformal_threshold(
    scores: np.ndarray, pass_rate: float, confidence: float | None = None
) -> tuple[float, int, bool]:
    """``(threshold, rank, guaranteed)``: the ``rank``-th smallest of the ``n`` validation ``scores``.

    The share of new photographs (exchangeable with the validation ones) whose score is at most
    the ``k``-th smallest of ``n`` is Beta(k, n + 1 - k)-distributed (split conformal prediction).
    With ``confidence`` None the rank is ``ceil((n + 1) * pass_rate)``: at least ``pass_rate`` pass
    *on average*. With a ``confidence`` the rank is the smallest ``k`` with
    ``P(share < pass_rate) <= 1 - confidence`` (Vovk's training-conditional guarantee): with that
    probability over the draw of the validation split, at least ``pass_rate`` pass. A small split
    needs a high rank; where even ``k = n`` cannot promise it, the largest score is used and
    ``guaranteed`` is False. The plain ``pass_rate`` quantile of a small split lets fewer through.
    """
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    count = len(ordered)
    if confidence is None:
        rank = math.ceil((count + 1) * pass_rate - 1e-9)
        guaranteed = rank <= count
    else:
        ranks = np.arange(1, count + 1)
        promised = beta.cdf(pass_rate, ranks, count + 1 - ranks) <= 1.0 - confidence
        guaranteed = bool(promised.any())
        rank = int(ranks[promised][0]) if guaranteed else count
    rank = max(1, min(rank, count))
    return float(ordered[rank - 1]), rank, guaranteed


def mahalanobis(features: np.ndarray, ood: Mapping[str, Any]) -> np.ndarray:
    """Distance of each row of ``features`` ``(N, D)`` from the saved training mean."""
    centred = np.asarray(features, dtype=np.float64) - np.asarray(ood["mean"], dtype=np.float64)
    precision = np.asarray(ood["precision"], dtype=np.float64)
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, precision, centred), 0.0))


# --- applying ---------------------------------------------------------------------------------


def effective_gates(gates: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None) -> dict | None:
    """The saved gates with ``predict.gradability`` overrides (``<measure>_min`` / ``_max``,
    ``ood_threshold``) applied; None when the model has no gates."""
    if not gates:
        return None
    result = {
        "gradability": {**gates["gradability"], "bounds": {
            name: dict(bound) for name, bound in gates["gradability"]["bounds"].items()
        }},
        "ood": dict(gates["ood"]) if gates.get("ood") else None,
    }
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "ood_threshold":
            if result["ood"] is not None:
                result["ood"]["threshold"] = float(value)
            continue
        name, side = key.rsplit("_", 1)
        result["gradability"]["bounds"].setdefault(name, {"min": None, "max": None})[side] = float(value)
    return result


def check_gradability(measures: Mapping[str, float], gradability: Mapping[str, Any]) -> tuple[list[str], float]:
    """The reasons an image fails (empty when gradable) and its largest violation (> 0 fails)."""
    reasons: list[str] = []
    worst = -np.inf
    for name, bound in gradability["bounds"].items():
        value = measures.get(name)
        if value is None or not np.isfinite(value):
            continue
        spread = bound.get("spread") or 1.0
        for side in ("min", "max"):
            limit = bound.get(side)
            if limit is None:
                continue
            excess = (limit - value) if side == "min" else (value - limit)
            worst = max(worst, excess / spread)
            if excess > 0:
                reason = REASONS.get((name, side), f"{name} {'below' if side == 'min' else 'above'} its bound")
                text = f"{reason} [{name} {value:.4g} {'<' if side == 'min' else '>'} {limit:.4g}]"
                reasons.append(text)
    return reasons, float(worst if np.isfinite(worst) else 0.0)


def ood_violation(distance: float, ood: Mapping[str, Any]) -> float:
    """How far past the threshold a distance is, in thresholds (> 0 fails)."""
    threshold = float(ood["threshold"])
    return (distance - threshold) / max(threshold, 1e-12)


def gate_verdict(
    measures: Mapping[str, float], distance: float | None, gates: Mapping[str, Any]
) -> dict[str, Any]:
    """``gradable``, ``gradability_reasons``, ``in_distribution``, ``gate_score`` of one image."""
    reasons, score = check_gradability(measures, gates["gradability"])
    ood = gates.get("ood")
    in_distribution = None
    if ood is not None and distance is not None:
        violation = ood_violation(distance, ood)
        in_distribution = bool(violation <= 0)
        score = max(score, violation)
    return {
        "gradable": not reasons,
        "gradability_reasons": reasons,
        "in_distribution": in_distribution,
        "gate_score": float(score),
    }


def gate_score(measures: Mapping[str, float], distance: float | None, gates: Mapping[str, Any]) -> float:
    """One number, > 0 exactly when the image fails the gate (for ROC curves)."""
    return gate_verdict(measures, distance, gates)["gate_score"]


# --- the whole gate ---------------------------------------------------------------------------

# At most this many training pictures are measured (a fixed, evenly spaced subset beyond it).
MAX_FIT_IMAGES = 5000


def _subset(count: int) -> np.ndarray:
    if count <= MAX_FIT_IMAGES:
        return np.arange(count)
    return np.linspace(0, count - 1, MAX_FIT_IMAGES).round().astype(int)


def fit_gates(
    train_images: np.ndarray | None,
    train_sizes: Sequence[Sequence[int] | None] | None,
    train_features: np.ndarray,
    val_features: np.ndarray,
    params: GateParams | None = None,
) -> dict[str, Any]:
    """The gate saved in ``model_info["gates"]``.

    Args:
        train_images: the training split's image cache (uint8 ``(N, S, S, 3)``, at the model's
            ``image_size``), or None when it is gone (then only ``resolution`` can be bounded).
        train_sizes: ``(width, height)`` of the training split's original files (None where a
            file is unreadable), or None when they are gone (no ``resolution`` bound).
        train_features, val_features: compressed features of the feature cache.
        params: the ``gate`` block (quantile, margin, out-of-distribution pass rate and
            confidence); its defaults when None.
    """
    params = params or GateParams()
    rows: list[dict[str, float]] = []
    count = 0 if train_images is None else len(train_images)
    sizes = [s for s in (train_sizes or []) if s]
    if count:
        for index in _subset(count):
            rows.append(quality_measures(np.asarray(train_images[index])))
    else:
        logger.warning(
            "The training image cache is gone, so the gate's image-quality bounds cannot be "
            "fitted: only resolution and the out-of-distribution check will gate photographs. "
            "Re-run `kedro run --pipelines ingestion` and then the ensemble pipeline to fit them."
        )
    for position, index in enumerate(_subset(len(sizes))):
        size = float(min(sizes[index]))
        if position < len(rows):
            rows[position]["resolution"] = size
        else:
            rows.append({"resolution": size})
    if not sizes:
        logger.warning(
            "The original training photographs are not readable, so the gate has no resolution "
            "bound (the other checks still apply)."
        )
    source = (
        f"{count} training-split pictures from the image cache"
        + (f" at {train_images.shape[1]} px" if count else "")
        + f"; resolution from {len(sizes)} original training files"
    )
    gradability = fit_gradability(rows, params.quantile, params.margin, source)
    ood = fit_ood(train_features, val_features, params.ood_pass_rate, params.ood_confidence)
    logger.info(
        "Gate fitted on the training split (%s): out-of-distribution threshold %.3f passes %.1f%% "
        "of validation images.", source, ood["threshold"], 100 * ood["validation_pass_rate"],
    )
    return {"format": GATES_FORMAT, "gradability": gradability, "ood": ood}


def original_sizes(paths: Iterable[Any]) -> list[tuple[int, int] | None]:
    """``(width, height)`` of each file from its header (None where it cannot be read)."""
    return [original_size(path) for path in paths]


def verdict_for(
    picture: np.ndarray,
    original: Sequence[int] | None,
    compressed_features: np.ndarray | None,
    gates: Mapping[str, Any],
) -> dict[str, Any]:
    """The gate's verdict for one photograph from plain inputs: what a consumer of ``model.onnx``
    does with the decoded uint8 picture, its original ``(width, height)``, the graph's
    ``compressed_features`` row and ``gates`` from ``model_onnx_info.json`` (NumPy only)."""
    distance = None
    if gates.get("ood") is not None and compressed_features is not None:
        distance = float(mahalanobis(np.asarray(compressed_features)[None, :], gates["ood"])[0])
    verdict = gate_verdict(quality_measures(picture, original), distance, gates)
    verdict["ood_distance"] = distance
    verdict["decision_if_gated"] = MANUAL_GRADING
    return verdict
