"""The gate in front of the grader: could a human grade this photograph, and is it like the
training photographs?

Two questions, kept apart:

- **Gradability** (:mod:`qsight_pipeline.inference.gradability`): absolute image-quality bounds
  of a fundus photograph (``gate.gradability``), the same for every camera and every model. They
  are not fitted on the training photographs; they are saved with the model as plain numbers.
- **Out of distribution** (:mod:`qsight_pipeline.inference.ood`): a detector's score of the
  encoder's pooled features (``gate.ood_detector``, chosen by measurement among Mahalanobis,
  k-NN, energy and ViM; ``ood["space"]``, the compressed features for a gate saved before the
  space was recorded), fitted on the training split, with a split-conformal threshold on the
  validation split. Everything particular to the training photographs (their camera, their
  field size, their colours) is this check's business.

An image outside any bound is *not* given a grade: it is referred for manual grading.
:func:`gate_score` is one number per image, positive exactly when the image fails the gate (the
largest violation of any bound, in that measure's unit, or of the threshold, in thresholds), so
the gate can be scored with an ROC curve (:mod:`qsight_pipeline.inference.gate_eval`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from qsight_pipeline.config.gate import GateParams, GradabilityBounds
from qsight_pipeline.constants import HEAD_A, HEAD_B
from qsight_pipeline.data import feature_cache
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
from qsight_pipeline.inference.ood import (
    COMPRESSED_SPACE,
    ENCODER_SPACE,
    OodSplits,
    conformal_threshold,
    features_output,
    fit_ood,
    get_detector,
    ood_score,
    ood_space,
)

__all__ = [
    "GATES_FORMAT", "MANUAL_GRADING", "OOD_REASON", "OodSplits", "StaleGateError",
    "check_gradability", "conformal_threshold", "effective_gates", "fit_gates", "fit_gradability",
    "fit_ood", "gate_score", "gate_verdict", "get_detector", "gradability_picture", "ood_score",
    "ood_space", "ood_splits", "original_size", "original_sizes", "photograph_measures",
    "quality_measures", "space_features", "verdict_for",
]

logger = logging.getLogger(__name__)

GATES_FORMAT = "qsight.gates/3"
# Format 2 differs only in its out-of-distribution part (Mahalanobis alone): read as it was.
READABLE_FORMATS = (GATES_FORMAT, "qsight.gates/2")
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
        "fitted_on": "absolute bounds (gate.gradability, docs/grading.md, \"Gradable?\"): not fitted on training data",
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
            "gate.gradability.* (docs/grading.md, \"Gradable?\") only if that is wrong for your camera.",
            failing, len(rows), small, len(shorter), next(iter(reasons), "resolution"),
        )
    return check


# --- applying ---------------------------------------------------------------------------------


def check_format(gates: Mapping[str, Any]) -> None:
    """Refuse a gate this version does not read, naming the command that fits it again."""
    found = gates.get("format")
    if found not in READABLE_FORMATS:
        raise StaleGateError(
            f"This model's gate was saved in format {found!r}, and this version reads "
            f"{', '.join(map(repr, READABLE_FORMATS))}: its gradability bounds were fitted on the "
            "training photographs, where they are now absolute bounds of a fundus photograph. "
            f"Fit the gate again with {REFIT_COMMAND}; the model's weights are kept."
        )


def _as_current(ood: Mapping[str, Any]) -> dict[str, Any]:
    """A format-2 out-of-distribution check (one Mahalanobis distance) in today's layout, with
    its own threshold: the model's gate as it was saved."""
    if "detectors" in ood:
        return dict(ood)
    kept = ("threshold", "rank", "guaranteed", "validation_pass_rate")
    return {
        **{k: v for k, v in ood.items() if k not in ("mean", "precision")}, "detector": "mahalanobis",
        "detectors": {"mahalanobis": {"params": {"mean": ood["mean"], "precision": ood["precision"]},
                                      **{k: ood.get(k) for k in kept}}},
    }


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
        "ood": _as_current(gates["ood"]) if gates.get("ood") else None,
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


def ood_violation(score: float, ood: Mapping[str, Any]) -> float:
    """How far past the threshold an out-of-distribution score is, in thresholds (> 0 fails)."""
    threshold = float(ood["threshold"])
    return (score - threshold) / max(abs(threshold), 1e-12)


def gate_verdict(
    measures: Mapping[str, float], ood_value: float | None, gates: Mapping[str, Any]
) -> dict[str, Any]:
    """``gradable``, ``gradability_reasons``, ``in_distribution``, ``gate_score`` of one image
    from its gradability ``measures`` and its out-of-distribution score ``ood_value``."""
    reasons, score = check_gradability(measures, gates["gradability"])
    ood = gates.get("ood")
    in_distribution = None
    if ood is not None and ood_value is not None:
        violation = ood_violation(ood_value, ood)
        in_distribution = bool(violation <= 0)
        score = max(score, violation)
    return {
        "gradable": not reasons,
        "gradability_reasons": reasons,
        "in_distribution": in_distribution,
        "gate_score": float(score),
    }


def gate_score(measures: Mapping[str, float], ood_value: float | None, gates: Mapping[str, Any]) -> float:
    """One number, > 0 exactly when the image fails the gate (for ROC curves)."""
    return gate_verdict(measures, ood_value, gates)["gate_score"]


# --- the whole gate ---------------------------------------------------------------------------


def ood_splits(cache: Mapping[str, Any]) -> OodSplits:
    """What the out-of-distribution detectors are fitted on, from the feature cache: the training
    and validation splits' encoder features (``space`` ``encoder``) and the classical heads' mean
    cached logits. A cache written before the encoder features were stored gives the compressed
    features (``space`` ``compressed``, as gates were fitted then), with a warning."""
    stored = all(f"{split}_encoder_features" in cache for split in ("train", "val"))
    space = ENCODER_SPACE if stored else COMPRESSED_SPACE
    if space == COMPRESSED_SPACE:
        logger.warning(
            "The feature cache holds no encoder features (written before they were stored): the "
            "out-of-distribution gate is fitted on the compressed features, which tell non-fundus "
            "photographs apart less well. `kedro run --pipelines features` rewrites the cache."
        )

    rows = feature_cache.split_encoder_features if stored else feature_cache.split_features

    def logits(split: str) -> np.ndarray | None:
        heads = [cache.get(f"{split}_logits_{head}") for head in (HEAD_A, HEAD_B)]
        if any(h is None for h in heads):
            return None
        return (np.asarray(heads[0], dtype=np.float64) + np.asarray(heads[1], dtype=np.float64)) / 2

    train_logits, val_logits = logits("train"), logits("val")
    if train_logits is None or val_logits is None:
        train_logits = val_logits = None
    return OodSplits(rows(cache, "train"), rows(cache, "val"), train_logits, val_logits, space)


def space_features(
    outputs: Mapping[str, Any], gates: Mapping[str, Any] | None
) -> Any:
    """The features the saved gate scores, from the graph's outputs by name
    (``{"compressed_features": ..., "encoder_features": ...}``); None without an OOD gate."""
    output = features_output(gates)
    return None if output is None else outputs.get(output)


def fit_gates(
    train_images: np.ndarray | None,
    train_sizes: Sequence[Sequence[int] | None] | None,
    splits: OodSplits,
    params: GateParams | None = None,
) -> dict[str, Any]:
    """The gate saved in ``model_info["gates"]``.

    Args:
        train_images: the training split's image cache (uint8 ``(N, S, S, 3)``), or None when it
            is gone: only checked against the absolute gradability bounds (a warning when many
            fail), never fitted on.
        train_sizes: ``(width, height)`` of the training split's original files (None where a
            file is unreadable), or None: the same check for the resolution bound.
        splits: the features the out-of-distribution detectors are fitted on (the training
            split) and their thresholds ranked on (validation), in ``splits.space``, with the
            classical heads' mean logits for the detectors that need them (energy, ViM; without
            them only the others are fitted). :func:`ood_splits` makes them from the feature cache.
        params: the ``gate`` block; its defaults when None.
    """
    params = params or GateParams()
    gradability = fit_gradability(params.gradability, train_images, train_sizes)
    ood = fit_ood(splits, params.ood_detector, params.ood_pass_rate, params.ood_confidence)
    logger.info(
        "Gate: absolute gradability bounds; out-of-distribution score %s on the %s features, "
        "threshold %.4g (fitted on the training split, ranked on validation) passes %.1f%% of "
        "validation images.",
        ood["detector"], ood["space"], ood["threshold"], 100 * ood["validation_pass_rate"],
    )
    return {"format": GATES_FORMAT, "gradability": gradability, "ood": ood}


def original_sizes(paths: Iterable[Any]) -> list[tuple[int, int] | None]:
    """``(width, height)`` of each file from its header (None where it cannot be read)."""
    return [original_size(path) for path in paths]


def verdict_for(
    picture: np.ndarray,
    original: Sequence[int] | None,
    features: np.ndarray | None,
    gates: Mapping[str, Any],
    logits: np.ndarray | None = None,
) -> dict[str, Any]:
    """The gate's verdict for one photograph from plain inputs: what a consumer of ``model.onnx``
    does with the photograph letterboxed to ``gates["gradability"]["analysis_size"]`` px (its
    own size when smaller; :func:`gradability_picture`), its original ``(width, height)``, the
    graph's row of the output the gate scores (``features``: ``gates["ood"]["features"]``, also
    ``model_onnx_info.json``'s ``gate_features_output``; ``compressed_features`` for a gate saved
    without a ``space``) and ``gates`` from ``model_onnx_info.json`` (NumPy and SciPy only).
    ``logits``: the graph's ``classical_logits`` row (the classical heads' mean logits), which
    the ``energy`` and ``vim`` detectors score; the others ignore it."""
    gates = effective_gates(gates)
    score = None
    if gates.get("ood") is not None and features is not None:
        score = float(ood_score(np.asarray(features)[None, :], gates["ood"], logits)[0])
    verdict = gate_verdict(quality_measures(picture, original), score, gates)
    verdict["ood_distance"] = score
    verdict["decision_if_gated"] = MANUAL_GRADING
    return verdict
