"""Temperature scaling and the referral operating point, fitted on the validation split.

- Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks"): one scalar
  ``T`` per head and one for the fused ensemble, chosen to minimise the validation negative
  log-likelihood of ``softmax(logits / T)``. The ensemble's "logits" are the log of its fused
  probabilities (a mixture of the heads' softmaxes has no logits of its own).
- The referral threshold on P(grade >= 2) is the highest one whose validation sensitivity reaches
  ``referral.target_sensitivity`` (from scikit-learn's ``roc_curve``).
- ``needs_review``: the entropy of the calibrated ensemble above its validation quantile.

Expected calibration error comes from torchmetrics, reliability curves from scikit-learn, Wilson
intervals from scipy: nothing here re-implements a metric.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from scipy.stats import binomtest
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score, roc_curve
from torchmetrics.functional.classification import multiclass_calibration_error

from qsight_pipeline.constants import ENSEMBLE, HEADS, REFERABLE_GRADE

logger = logging.getLogger(__name__)

# Temperatures are searched over log T in this range: T from ~0.05 to ~20.
_LOG_T_BOUNDS = (-3.0, 3.0)
_EPS = 1e-12
RELIABILITY_BINS = 10


def ensemble_logits(fused_probs: np.ndarray) -> np.ndarray:
    """Log of the fused probabilities: what the ensemble's temperature divides."""
    return np.log(np.clip(np.asarray(fused_probs, dtype=np.float64), _EPS, None))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the NLL of ``softmax(logits / T)`` on ``labels``."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        scaled = log_softmax(logits / np.exp(log_t), axis=1)
        return float(-scaled[np.arange(len(labels)), labels].mean())

    result = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded")
    if min(abs(result.x - bound) for bound in _LOG_T_BOUNDS) < 1e-3:
        logger.warning(
            "Temperature scaling hit its bound (T = %.3g): this head's validation predictions "
            "carry almost no information about the grade.", np.exp(result.x),
        )
    return float(np.exp(result.x))


def calibrated_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row."""
    probs = np.asarray(probs, dtype=np.float64)
    return -(probs * np.log(np.clip(probs, _EPS, None))).sum(axis=1)


def referable_probability(probs: np.ndarray) -> np.ndarray:
    """P(grade >= 2) per row."""
    return np.asarray(probs)[:, REFERABLE_GRADE:].sum(axis=1)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Top-label ECE (L1, equal-width bins) from torchmetrics."""
    if len(labels) == 0:
        return None

    value = multiclass_calibration_error(
        torch.as_tensor(np.asarray(probs, dtype=np.float32)),
        torch.as_tensor(np.asarray(labels, dtype=np.int64)),
        num_classes=probs.shape[1], n_bins=RELIABILITY_BINS, norm="l1",
    )
    return float(value)


def reliability_curve(probs: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """Top-label reliability: mean confidence and accuracy per non-empty bin (scikit-learn)."""
    probs = np.asarray(probs)
    if len(labels) == 0:
        return {"confidence": [], "accuracy": []}
    correct = (probs.argmax(axis=1) == np.asarray(labels)).astype(int)
    accuracy, confidence = calibration_curve(
        correct, probs.max(axis=1), n_bins=RELIABILITY_BINS, strategy="uniform"
    )
    return {"confidence": confidence.tolist(), "accuracy": accuracy.tolist()}


def wilson_interval(successes: int, trials: int) -> tuple[float | None, float | None]:
    """95% Wilson score interval of a proportion (scipy); ``(None, None)`` with no trials."""
    if trials == 0:
        return None, None

    interval = binomtest(int(successes), int(trials)).proportion_ci(0.95, method="wilson")
    return float(interval.low), float(interval.high)


def sensitivity_specificity(
    scores: np.ndarray, labels: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Sensitivity and specificity of ``score >= threshold`` for referable DR, with Wilson CIs."""
    referable = np.asarray(labels) >= REFERABLE_GRADE
    refer = np.asarray(scores) >= threshold
    true_pos, positives = int((refer & referable).sum()), int(referable.sum())
    true_neg, negatives = int((~refer & ~referable).sum()), int((~referable).sum())
    return {
        "threshold": float(threshold),
        "sensitivity": true_pos / positives if positives else None,
        "sensitivity_ci95": list(wilson_interval(true_pos, positives)),
        "specificity": true_neg / negatives if negatives else None,
        "specificity_ci95": list(wilson_interval(true_neg, negatives)),
        "positives": positives,
        "negatives": negatives,
    }


def choose_threshold(scores: np.ndarray, labels: np.ndarray, target_sensitivity: float) -> float:
    """The highest threshold on ``scores`` whose sensitivity for grade >= 2 reaches the target.

    With no referable image in ``labels`` there is nothing to reach: 0.5 is used, with a warning.
    """
    referable = np.asarray(labels) >= REFERABLE_GRADE
    if referable.all() or not referable.any():
        logger.warning(
            "The validation split has %s referable (grade >= 2) images: the referral threshold "
            "cannot be chosen for referral.target_sensitivity; using 0.5.",
            "only" if referable.any() else "no",
        )
        return 0.5
    _, tpr, thresholds = roc_curve(referable, scores, drop_intermediate=False)
    # roc_curve lists thresholds from high to low with tpr rising; the first reaching the target
    # is the most specific one that does.
    index = int(np.argmax(tpr >= target_sensitivity - 1e-12))
    return float(min(thresholds[index], 1.0))


def roc_points(scores: np.ndarray, labels: np.ndarray) -> dict[str, list[float]] | None:
    referable = np.asarray(labels) >= REFERABLE_GRADE
    if referable.all() or not referable.any():
        return None
    fpr, tpr, _ = roc_curve(referable, scores)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(roc_auc_score(referable, scores))}


def calibrate_split(
    split_result: Mapping[str, Any], temperatures: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """Calibrated probabilities of every head present and of the ensemble for one split."""
    outputs = split_result["outputs"]
    probs: dict[str, np.ndarray] = {}
    for head in HEADS:
        if f"logits_{head}" in outputs and head in temperatures:
            probs[head] = calibrated_probs(outputs[f"logits_{head}"], temperatures[head])
    raw = split_result["probabilities"][ENSEMBLE]
    probs[ENSEMBLE] = calibrated_probs(ensemble_logits(raw), temperatures[ENSEMBLE])
    return probs


def fit_temperatures(val_result: Mapping[str, Any]) -> dict[str, float]:
    """One temperature per active head (on its logits) and one for the fused ensemble."""
    labels = val_result["labels"]
    outputs = val_result["outputs"]
    temperatures = {
        head: fit_temperature(outputs[f"logits_{head}"], labels)
        for head in HEADS
        if f"logits_{head}" in outputs
    }
    temperatures[ENSEMBLE] = fit_temperature(
        ensemble_logits(val_result["probabilities"][ENSEMBLE]), labels
    )
    return temperatures
