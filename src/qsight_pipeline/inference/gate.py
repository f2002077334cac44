"""The gate in front of the grader: could a human grade this photograph, and is it like the
training photographs?

Two questions, kept apart:

- **Gradability** (:mod:`qsight_pipeline.inference.gradability`): absolute image-quality bounds
  of a fundus photograph (``gate.gradability``), the same for every camera and every model. They
  are not fitted on the training photographs; they are saved with the model as plain numbers.
- **Out of distribution**: the Mahalanobis distance of the model's compressed features from the
  training split's (mean and Ledoit-Wolf shrunk covariance of the feature cache), with a
  split-conformal threshold on the validation split. Everything particular to the training
  photographs (their camera, their field size, their colours) is this check's business.

An image outside any bound is *not* given a grade: it is referred for manual grading.
:func:`gate_score` is one number per image, positive exactly when the image fails the gate (the
largest violation of any bound, in that measure's unit, or of the threshold, in thresholds), so
the gate can be scored with an ROC curve (:mod:`qsight_pipeline.inference.gate_eval`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import beta
from sklearn.covariance import LedoitWolf

from qsight_pipeline.config.gate import GateParams, GradabilityBounds
from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.inference.gradability import (
    ANALYSIS_SIZE,
    FIELD_LEVEL,
    bounds_from,
    check_gradability,
    gradability_picture,
    original_size,
    photograph_measures,
    quality_measures,
)

__all__ = [
    "GATES_FORMAT", "MANUAL_GRADING", "OOD_REASON", "StaleGateError", "check_gradability",
    "conformal_threshold", "effective_gates", "fit_gates", "fit_gradability", "fit_ood",
    "gate_score", "gate_verdict", "gradability_picture", "mahalanobis", "original_size",
    "original_sizes", "photograph_measures", "quality_measures", "verdict_for",
]

logger = logging.getLogger(__name__)

GATES_FORMAT = "qsight.gates/2"
MANUAL_GRADING = "refer for manual grading"
OOD_REASON = "out of distribution (unlike the training photographs)"
REFIT_COMMAND = (
    "`kedro run --pipelines ensemble` (or `save_model` again for a model trained from Python)"
)


class StaleGateError(ArtifactError):
    """A model's gate was saved in a format this version does not read."""


# --- fitting ----------------------------------------------------------------------------------

# At most this many training pictures are checked against the gradability bounds.
MAX_CHECK_IMAGES = 500


def fit_gradability(
    bounds: GradabilityBounds | None = None,
    train_images: np.ndarray | None = None,
    train_sizes: Sequence[Sequence[int] | None] | None = None,
) -> dict[str, Any]:
    """The gradability part of the gate: the absolute ``bounds`` (not fitted), and how the
    training pictures fare against them (``training_check``; a warning when many fail).

    ``train_images`` (the training image cache, uint8 ``(N, S, S, 3)``) and ``train_sizes``
    (``(width, height)`` of the original training files) only feed that check.
    """
    bounds = bounds or GradabilityBounds()
    gradability = {
        "bounds": bounds_from(bounds.to_dict()),
        "fitted_on": "absolute bounds (gate.gradability, README \"Gradability\"): not fitted on training data",
        "analysis_size": ANALYSIS_SIZE,
        "field_level": FIELD_LEVEL,
        "quantile": None,  # the bounds of format 1 were quantiles of the training split
        "margin": None,
        "training_check": _training_check(bounds, train_images, train_sizes),
    }
    return gradability


def _training_check(
    bounds: GradabilityBounds, images: np.ndarray | None, sizes: Sequence[Sequence[int] | None] | None,
) -> dict[str, Any]:
    """How many training pictures (at the image cache's size) and original files (by their
    shorter side) fail the bounds, and why."""
    gradability = {"bounds": bounds_from(bounds.to_dict())}
    count = 0 if images is None else len(images)
    rows = np.linspace(0, count - 1, min(count, MAX_CHECK_IMAGES)).round().astype(int) if count else []
    reasons: dict[str, int] = {}
    failing = 0
    for index in rows:
        why, _ = check_gradability(quality_measures(np.asarray(images[index])), gradability)
        failing += bool(why)
        for reason in {r.split(" [")[0] for r in why}:
            reasons[reason] = reasons.get(reason, 0) + 1
    shorter = [min(s) for s in (sizes or []) if s]
    small = sum(1 for side in shorter if side < bounds.resolution_min)
    check = {
        "pictures": int(len(rows)), "failing": int(failing),
        "reasons": dict(sorted(reasons.items(), key=lambda item: -item[1])),
        "files": len(shorter), "files_below_resolution": int(small),
    }
    if len(rows) and failing > 0.1 * len(rows) or shorter and small > 0.1 * len(shorter):
        logger.warning(
            "%d of %d training pictures and %d of %d training files fail the gate's absolute "
            "gradability bounds (most often: %s). The bounds describe fundus photographs as a "
            "camera takes them; if this data set's pictures are processed (cropped, filtered, "
            "small), photographs like them will be referred for manual grading. Adjust "
            "gate.gradability.* (README, \"Gradability\") only if that is wrong for your camera.",
            failing, len(rows), small, len(shorter), next(iter(reasons), "resolution"),
        )
    return check


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
            "largest validation score (about %.1f%% pass on average). More validation images, "
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


def check_format(gates: Mapping[str, Any]) -> None:
    """Refuse a gate this version does not read, naming the command that fits it again."""
    found = gates.get("format")
    if found != GATES_FORMAT:
        raise StaleGateError(
            f"This model's gate was saved in format {found!r}, and this version reads "
            f"{GATES_FORMAT!r}: its gradability bounds were fitted on the training photographs, "
            "where they are now absolute bounds of a fundus photograph. Fit the gate again with "
            f"{REFIT_COMMAND}; the model's weights are kept."
        )


def effective_gates(gates: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None) -> dict | None:
    """The saved gates with ``predict.gradability`` overrides (``<measure>_min`` / ``_max``,
    ``ood_threshold``) applied; None when the model has no gates.

    Raises:
        StaleGateError: a gate of another format (a model saved before this version).
    """
    if not gates:
        return None
    check_format(gates)
    result = {
        **gates,
        "gradability": {**gates["gradability"], "bounds": {
            name: dict(bound) for name, bound in gates["gradability"]["bounds"].items()
        }},
        "ood": dict(gates["ood"]) if gates.get("ood") else None,
    }
    bounds = result["gradability"]["bounds"]
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "ood_threshold":
            if result["ood"] is not None:
                result["ood"]["threshold"] = float(value)
            continue
        for name, bound in bounds_from({key: value}).items():
            if any(v is not None for v in bound.values()):
                bounds.setdefault(name, {"min": None, "max": None}).update(
                    {side: v for side, v in bound.items() if v is not None}
                )
    return result


def ood_violation(distance: float, ood: Mapping[str, Any]) -> float:
    """How far past the threshold a distance is, in thresholds (> 0 fails)."""
    threshold = float(ood["threshold"])
    return (distance - threshold) / max(abs(threshold), 1e-12)


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


def fit_gates(
    train_images: np.ndarray | None,
    train_sizes: Sequence[Sequence[int] | None] | None,
    train_features: np.ndarray,
    val_features: np.ndarray,
    params: GateParams | None = None,
) -> dict[str, Any]:
    """The gate saved in ``model_info["gates"]``.

    Args:
        train_images: the training split's image cache (uint8 ``(N, S, S, 3)``), or None when it
            is gone: only checked against the absolute gradability bounds (a warning when many
            fail), never fitted on.
        train_sizes: ``(width, height)`` of the training split's original files (None where a
            file is unreadable), or None: the same check for the resolution bound.
        train_features, val_features: compressed features of the feature cache; the
            out-of-distribution score is fitted on the first, its threshold on the second.
        params: the ``gate`` block; its defaults when None.
    """
    params = params or GateParams()
    gradability = fit_gradability(params.gradability, train_images, train_sizes)
    ood = fit_ood(train_features, val_features, params.ood_pass_rate, params.ood_confidence)
    logger.info(
        "Gate: absolute gradability bounds; out-of-distribution threshold %.3f (fitted on the "
        "training split, ranked on validation) passes %.1f%% of validation images.",
        ood["threshold"], 100 * ood["validation_pass_rate"],
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
    does with the photograph letterboxed to ``gates["gradability"]["analysis_size"]`` px (its
    own size when smaller; :func:`gradability_picture`), its original ``(width, height)``, the
    graph's ``compressed_features`` row and ``gates`` from ``model_onnx_info.json`` (NumPy only)."""
    check_format(gates)
    distance = None
    if gates.get("ood") is not None and compressed_features is not None:
        distance = float(mahalanobis(np.asarray(compressed_features)[None, :], gates["ood"])[0])
    verdict = gate_verdict(quality_measures(picture, original), distance, gates)
    verdict["ood_distance"] = distance
    verdict["decision_if_gated"] = MANUAL_GRADING
    return verdict
