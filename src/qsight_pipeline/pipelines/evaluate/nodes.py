"""Nodes of the ``evaluate`` pipeline: a trained model on an external labelled data set."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qsight_pipeline.config.evaluate import EvaluateParams
from qsight_pipeline.constants import ENSEMBLE
from qsight_pipeline.data.layouts import scan_dataset
from qsight_pipeline.errors import UserError
from qsight_pipeline.files.plain import path_text, to_plain
from qsight_pipeline.inference.rows import prediction_row

logger = logging.getLogger(__name__)


class EvaluateInputError(UserError, FileNotFoundError):
    """``evaluate.dataset.root`` is not a folder."""


def _count(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def evaluate_external(
    complete_checkpoint: dict[str, Any], evaluate: EvaluateParams
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Grade every labelled photograph of ``evaluate.dataset`` and compare with the labels.

    Nothing is fitted here: the calibration, referral threshold and gate are the ones saved with
    the model. Returns ``external_validation`` (JSON): the model's metrics on every readable
    photograph (``model``), on those the gate lets through (``graded``), the referral operating
    point on both with Wilson intervals, the screening decision *with* the gate (a photograph
    referred for manual grading counts as referred), the gate's pass, gradable and
    in-distribution rates and reasons, the ECE before and after the saved temperatures
    (``calibration``), every figure beside the model's own test split's (``comparison``) and
    one sentence (``verdict``); and ``external_predictions``: one ``predictions.csv`` row per
    photograph plus its ``true_grade``.
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.inference.loading import loaded_from_checkpoint
    from qsight_pipeline.inference.predict import predict_images

    root = Path(evaluate.dataset.root).expanduser()
    if not root.is_dir():
        raise EvaluateInputError(
            f"evaluate.dataset.root is {root}, which is not a folder. Point it at a labelled data "
            f"set in the {evaluate.dataset.type!r} layout: kedro run --pipelines evaluate --params "
            "evaluate.dataset.root=/path/to/data,evaluate.dataset.type=sovitrath"
        )
    records = scan_dataset(root, evaluate.dataset.type).records
    paths = [Path(p) for p in records["path"]]
    labels_all = records["grade"].astype(int).to_numpy()
    loaded = loaded_from_checkpoint(complete_checkpoint, evaluate.device)
    predictions = predict_images(loaded, paths, batch_size=evaluate.batch_size, progress=True)

    rows = []
    for (_, record), path, prediction in zip(records.iterrows(), paths, predictions, strict=True):
        row = prediction_row(prediction, path, str(record["image_id"]))
        rows.append({"image": row.pop("image"), "true_grade": int(record["grade"]), **row})
    readable = np.array([p.error is None for p in predictions], dtype=bool)
    threshold = float(loaded.referral.get("threshold", 0.5))
    good = [p for p in predictions if p.error is None]
    result: dict[str, Any] = {
        "dataset": {"type": evaluate.dataset.type, "root": path_text(root), "images": len(paths),
                    "unreadable": int((~readable).sum())},
        "gate_available": loaded.gates is not None,
        **_screening_results(good, labels_all[readable], threshold),
    }
    result.update(_what_changed(result, good, labels_all[readable], loaded, evaluate))
    logger.info(
        "External validation on %d photographs of %s (%s): the gate passed %s; model kappa %s, "
        "referral sensitivity %s / specificity %s at the saved threshold %.3f.",
        len(paths), path_text(root), evaluate.dataset.type,
        "n/a" if result["gate"]["pass_rate"] is None else f"{100 * result['gate']['pass_rate']:.1f}%",
        _fmt((result["model"] or {}).get("quadratic_weighted_kappa")),
        _fmt((result["model_referral"] or {}).get("sensitivity")),
        _fmt((result["model_referral"] or {}).get("specificity")), threshold,
    )
    logger.info("%s", result["verdict"])
    return to_plain(result), pd.DataFrame(rows)


def _what_changed(
    result: dict[str, Any], good: list[Any], labels: np.ndarray, loaded: Any,
    evaluate: EvaluateParams,
) -> dict[str, Any]:
    """The ECE before and after the saved temperatures, the gate's rates (added to
    ``result["gate"]``), each figure beside the internal test split's, and the verdict."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.inference import external

    calibration = external.calibration_change(good, labels, loaded.temperatures, loaded.graph.fusion)
    result["gate"].update(external.gate_rates(good))
    model, referral = result["model"] or {}, result["model_referral"] or {}
    figures = {
        "qwk": model.get("quadratic_weighted_kappa"), "accuracy": model.get("accuracy"),
        "macro_f1": model.get("macro_f1"), "referable_auc": model.get("referable_auc"),
        "ece_before_temperature": calibration[ENSEMBLE]["before"],
        "ece_after_temperature": calibration[ENSEMBLE]["after"],
        "referral_sensitivity": referral.get("sensitivity"),
        "referral_specificity": referral.get("specificity"),
        **{key: result["gate"].get(key)
           for key in ("gradable_rate", "in_distribution_rate")},
        "gate_pass_rate": result["gate"]["pass_rate"] if loaded.gates is not None else None,
    }
    comparison = external.side_by_side(figures, loaded.training_summary)
    return {
        "calibration": calibration,
        "comparison": comparison,
        "verdict": external.transfer_verdict(comparison, evaluate.transfer_tolerance),
    }


def add_external_to_report(report_html: str | None, external_validation: dict[str, Any]) -> str:
    """report.html with the external-validation section (a page of its own when there is no
    report)."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.reporting.html import add_external_section

    return add_external_section(report_html, external_validation)


def _screening_results(good: list[Any], labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """The model's metrics and referral point on the readable photographs ``good``, on those the
    gate lets through, the screening decision with the gate, and the gate's counts."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.inference.calibration import sensitivity_specificity
    from qsight_pipeline.inference.predict import gate_reasons
    from qsight_pipeline.training.metrics import grading_metrics

    probs = np.array([p.ensemble_probabilities for p in good]).reshape(-1, 5)
    referable = np.array([p.referable_probability for p in good], dtype=float)
    gated = np.array([p.decision == "refer for manual grading" for p in good], dtype=bool)
    return {
        "model": grading_metrics(labels, probs) if len(labels) else None,
        "model_referral": sensitivity_specificity(referable, labels, threshold) if len(labels) else None,
        "graded": (grading_metrics(labels[~gated], probs[~gated]) if (~gated).any() else None),
        "graded_referral": (sensitivity_specificity(referable[~gated], labels[~gated], threshold)
                            if (~gated).any() else None),
        # The screening decision as a patient gets it: referred, or sent to manual grading.
        "screening_with_gate": (sensitivity_specificity(
            np.where(gated, 1.0, referable), labels, threshold) if len(labels) else None),
        "gate": {
            "pass_rate": float(1.0 - gated.mean()) if len(gated) else None,
            "referred_for_manual_grading": int(gated.sum()),
            "reasons": _count([r.split(" [")[0] for p in good for r in gate_reasons(p)]),
        },
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
