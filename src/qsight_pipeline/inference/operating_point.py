"""The model's calibration and screening operating point, chosen on validation, checked on test.

:func:`fit_operating_point` turns the ensemble pipeline's evaluation (per-sample head logits and
fused probabilities on val and test) into ``calibration.json``: what inference needs
(temperatures, referral threshold, review threshold) and what the report shows (ECE and
reliability before/after, test sensitivity/specificity at the threshold with 95% intervals, ROC).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from qsight_pipeline.config.referral import ReferralParams
from qsight_pipeline.constants import ENSEMBLE, HEADS
from qsight_pipeline.inference import calibration as cal
from qsight_pipeline.inference.loading import preprocessing_metadata

logger = logging.getLogger(__name__)

CALIBRATION_FORMAT = "qsight.calibration/1"


def _quality(split_result: Mapping[str, Any], calibrated: Mapping[str, np.ndarray]) -> dict:
    labels = split_result["labels"]
    raw = dict(split_result["probabilities"])
    ece = {
        model: {
            "before": cal.expected_calibration_error(np.asarray(raw[model]), labels),
            "after": cal.expected_calibration_error(calibrated[model], labels),
        }
        for model in (*HEADS, ENSEMBLE)
        if model in calibrated and model in raw
    }
    reliability = {
        "before": cal.reliability_curve(np.asarray(raw[ENSEMBLE]), labels),
        "after": cal.reliability_curve(calibrated[ENSEMBLE], labels),
    }
    return {"ece": ece, "reliability": reliability, "count": int(len(labels))}


def fit_operating_point(
    evaluation: Mapping[str, Mapping[str, Any]], referral: ReferralParams | Mapping[str, Any]
) -> dict[str, Any]:
    """Fit the temperatures and choose the referral and review thresholds on ``evaluation["val"]``.

    Args:
        evaluation: ``{"val": evaluate(...), "test": evaluate(...)}`` from the ensemble pipeline.
        referral: the ``referral`` parameter block.

    Returns:
        The ``calibration.json`` dict: ``temperatures``, ``referral`` (threshold, its validation
        sensitivity/specificity, the review threshold on entropy) and ``report`` (ECE, reliability
        curves, test operating point with Wilson intervals, test ROC curve).
    """
    if not isinstance(referral, ReferralParams):
        referral = ReferralParams.model_validate(dict(referral))
    val = evaluation["val"]
    temperatures = cal.fit_temperatures(val)
    val_probs = cal.calibrate_split(val, temperatures)[ENSEMBLE]
    val_scores = cal.referable_probability(val_probs)
    threshold = cal.choose_threshold(val_scores, val["labels"], referral.target_sensitivity)
    review_threshold = (
        float(np.quantile(cal.entropy(val_probs), 1.0 - referral.review_fraction))
        if len(val_probs) else None
    )
    point = {
        "target_sensitivity": referral.target_sensitivity,
        "threshold": threshold,
        "validation": cal.sensitivity_specificity(val_scores, val["labels"], threshold),
        "review_fraction": referral.review_fraction,
        "review_entropy_threshold": review_threshold,
    }
    report: dict[str, Any] = {"quality": {}, "test_operating_point": None, "test_roc": None}
    for split, result in evaluation.items():
        if split == "test":
            report = with_test_report(report, result, temperatures, threshold)
        else:
            report["quality"][split] = _quality(result, cal.calibrate_split(result, temperatures))
    logger.info(
        "Temperature scaling: %s. Referral threshold %.3f on P(grade >= 2) (validation "
        "sensitivity %s, specificity %s); review above entropy %s.",
        ", ".join(f"{k} T={v:.2f}" for k, v in temperatures.items()), threshold,
        _percent(point["validation"]["sensitivity"]), _percent(point["validation"]["specificity"]),
        "n/a" if review_threshold is None else f"{review_threshold:.3f}",
    )
    return {
        "format": CALIBRATION_FORMAT,
        "method": "temperature scaling (Guo et al. 2017) on the validation split",
        "temperatures": temperatures,
        "referral": point,
        "report": report,
    }


def with_test_report(
    report: Mapping[str, Any], test: Mapping[str, Any], temperatures: Mapping[str, float],
    threshold: float,
) -> dict[str, Any]:
    """``report`` plus the test split's part: its calibration quality and, when it has photographs,
    the referral threshold's sensitivity and specificity on it and its ROC curve.

    Args:
        report: the calibration report (``quality``, ``test_operating_point``, ``test_roc``).
        test: the trainer's evaluation of the test split (``labels`` and every head's logits).
        temperatures, threshold: the fitted operating point (chosen on validation only).
    """
    calibrated = cal.calibrate_split(test, temperatures)
    updated = {**report, "quality": {**report.get("quality", {})}}
    updated["quality"]["test"] = _quality(test, calibrated)
    if len(test["labels"]):
        scores = cal.referable_probability(calibrated[ENSEMBLE])
        updated["test_operating_point"] = cal.sensitivity_specificity(scores, test["labels"], threshold)
        updated["test_roc"] = cal.roc_points(scores, test["labels"])
    return updated


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


# What inference applies (saved in model_info.json); the rest of calibration.json is the report.
SAVED_KEYS = ("format", "method", "temperatures", "referral")


def model_info_with_operating_point(
    model_info: Mapping[str, Any], image_size: int, calibration: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``model_info`` plus what inference repeats: the ``preprocessing`` (the model config's, in
    ``model_info["model_config"]``, at ``image_size``) and, when fitted, the ``calibration``
    (temperatures, referral and review thresholds) that ``load_model`` reads."""
    config = model_info.get("model_config") or {}
    info = {**model_info, "preprocessing": preprocessing_metadata(
        config.get("preprocessing") or int(image_size), image_size)}
    if calibration:
        info["calibration"] = {key: calibration[key] for key in SAVED_KEYS}
    return info


def summary_with_operating_point(
    summary: Mapping[str, Any], calibration: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``training_summary`` plus ``calibration``: the saved operating point and its report."""
    if not calibration:
        return dict(summary)
    saved = {key: calibration[key] for key in SAVED_KEYS}
    return {**summary, "calibration": {**saved, **calibration["report"]}}
