"""Classification metrics for DR grading, computed with scikit-learn.

Every metric a report, a tracker or a test shows comes from :func:`grading_metrics`, so the numbers
agree wherever they are printed. :func:`headline_metrics` gives four of them for the quantum
study, which scores thousands of small splits: the same values (a test compares them with
:func:`grading_metrics` on random and degenerate inputs), from one confusion matrix.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata
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


def headline_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float | None]:
    """``quadratic_weighted_kappa``, ``accuracy``, ``macro_f1`` and ``referable_auc`` exactly as
    :func:`grading_metrics` gives them, about 30 times faster on a few hundred rows.

    scikit-learn checks and re-encodes the labels in each metric call, which costs milliseconds
    per call; here one 5x5 confusion matrix (``np.bincount``) gives kappa (scikit-learn's
    ``cohen_kappa_score`` formula with quadratic weights), accuracy and macro-F1 (over all five
    grades, 0 for a grade neither true nor predicted, as ``zero_division=0``), and the AUC is the
    Mann-Whitney statistic on average ranks (``roc_auc_score``'s value, ties counted half).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != NUM_GRADES or (
            len(probabilities) != len(y_true)):
        raise ValueError(f"probabilities must have shape ({len(y_true)}, {NUM_GRADES}), got "
                         f"{probabilities.shape}")
    n = y_true.size
    if n == 0:
        return {"quadratic_weighted_kappa": 0.0, "accuracy": 0.0, "macro_f1": 0.0,
                "referable_auc": None}
    y_pred = probabilities.argmax(axis=1)
    confusion = np.bincount(y_true * NUM_GRADES + y_pred,
                            minlength=NUM_GRADES * NUM_GRADES).reshape(NUM_GRADES, NUM_GRADES)
    hits = np.diag(confusion).astype(np.float64)
    true_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    denominators = true_counts + predicted_counts  # F1 = 2 TP / (2 TP + FP + FN)
    f1 = np.divide(2 * hits, denominators, out=np.zeros(NUM_GRADES), where=denominators > 0)

    ref_true = y_true >= REFERABLE_GRADE
    positives = int(ref_true.sum())
    auc = None
    if 0 < positives < n:
        ranks = rankdata(probabilities[:, REFERABLE_GRADE:].sum(axis=1))
        auc = float((ranks[ref_true].sum() - positives * (positives + 1) / 2)
                    / (positives * (n - positives)))
    return {"quadratic_weighted_kappa": _kappa_from_confusion(confusion, y_true, y_pred),
            "accuracy": float(hits.sum() / n), "macro_f1": float(f1.mean()),
            "referable_auc": auc}


def _kappa_from_confusion(confusion: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    # quadratic_weighted_kappa's rules: one grade between both raters -> 1.0 if they agree.
    if len(np.union1d(y_true, y_pred)) < 2:
        return 1.0 if np.array_equal(y_true, y_pred) else 0.0
    grades = np.arange(NUM_GRADES)
    weights = (grades[:, None] - grades[None, :]) ** 2
    expected = np.outer(confusion.sum(axis=1), confusion.sum(axis=0)) / confusion.sum()
    chance = float(np.sum(weights * expected))
    if chance == 0:
        return 0.0
    return float(1.0 - np.sum(weights * confusion) / chance)
