"""Classification metrics for DR grading, computed with scikit-learn.

Every metric a report, a tracker or a test shows comes from :func:`grading_metrics`, so the numbers
agree wherever they are printed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    recall_score,
    roc_auc_score,
)

from qsight_pipeline.constants import NUM_GRADES, REFERABLE_GRADE


def quadratic_weighted_kappa(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights over the five grades (0.0 when undefined)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.size == 0:
        return 0.0
    labels = list(range(NUM_GRADES))
    # sklearn returns nan (with a warning) when both raters use one grade only.
    if len(np.union1d(y_true, y_pred)) < 2:
        return 1.0 if np.array_equal(y_true, y_pred) else 0.0
    value = cohen_kappa_score(y_true, y_pred, labels=labels, weights="quadratic")
    return 0.0 if math.isnan(value) else float(value)


def grading_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """All metrics for one head on one split.

    Args:
        y_true: true grades, shape (n,).
        probabilities: predicted probabilities over the 5 grades, shape (n, 5).

    Returns:
        A JSON-serialisable dict: ``n``, ``accuracy``, ``quadratic_weighted_kappa``, ``macro_f1``,
        ``per_grade_recall`` (list of 5, ``None`` for a grade absent from ``y_true``),
        ``referable_sensitivity``, ``referable_specificity``, ``referable_auc`` (grade >= 2 vs
        below; ``None`` where undefined) and ``confusion_matrix`` (5x5, rows = true grade).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != NUM_GRADES:
        raise ValueError(
            f"probabilities must have shape (n, {NUM_GRADES}), got {probabilities.shape}"
        )
    y_pred = probabilities.argmax(axis=1)
    labels = list(range(NUM_GRADES))
    present = set(np.unique(y_true).tolist())
    recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)

    ref_true = y_true >= REFERABLE_GRADE
    ref_pred = y_pred >= REFERABLE_GRADE
    ref_score = probabilities[:, REFERABLE_GRADE:].sum(axis=1)
    positives = int(ref_true.sum())
    negatives = int((~ref_true).sum())
    return {
        "n": int(y_true.size),
        "accuracy": float(accuracy_score(y_true, y_pred)) if y_true.size else 0.0,
        "quadratic_weighted_kappa": quadratic_weighted_kappa(y_true, y_pred),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "per_grade_recall": [
            float(recalls[g]) if g in present else None for g in range(NUM_GRADES)
        ],
        "referable_sensitivity": float((ref_pred & ref_true).sum() / positives)
        if positives
        else None,
        "referable_specificity": float((~ref_pred & ~ref_true).sum() / negatives)
        if negatives
        else None,
        "referable_auc": float(roc_auc_score(ref_true, ref_score))
        if positives and negatives
        else None,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
