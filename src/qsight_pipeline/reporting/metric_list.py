"""The headline metrics of a graded split, defined once for the HTML report and the trackers.

Each is a key of ``training.metrics.grading_metrics`` with its column header in the report. The
``referable_*`` metrics (referable DR = grade >= 2) get their own group of columns in the report;
the trackers log every one as ``eval/{split}/{model}/{key}``.
"""

from __future__ import annotations

REPORT_METRICS: tuple[tuple[str, str], ...] = (
    ("accuracy", "Accuracy"),
    ("quadratic_weighted_kappa", "QWK"),
    ("macro_f1", "Macro-F1"),
    ("referable_sensitivity", "Sensitivity"),
    ("referable_specificity", "Specificity"),
    ("referable_auc", "AUC"),
)
REFERABLE_PREFIX = "referable_"
# Statistics of each latency component in training_summary.json's ``latency_ms``.
LATENCY_STATS: tuple[str, ...] = ("p50", "p95", "mean", "count")
