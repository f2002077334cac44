"""Nodes of the ``quantum_study`` pipeline. They read the feature cache (and, when present, the
quantum stage's metrics and the report), nothing else."""

from __future__ import annotations

import logging
from typing import Any

# Only pydantic at import time: torch, pandas and matplotlib load when a node runs (start-up stays
# light for every `kedro` command).
from qsight_pipeline.config.quantum_study import QuantumStudyParams

logger = logging.getLogger(__name__)


def run_quantum_study(
    quantum_training_data: dict[str, Any], quantum_study: QuantumStudyParams
) -> Any:
    """Train every contender x setting x hyperparameter x seed on the cached features.

    Returns the tidy table: validation scores for every row; test scores for the rows of the
    hyperparameter chosen on validation only.
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.data.feature_cache import check_feature_cache
    from qsight_pipeline.study import run_study
    from qsight_pipeline.study.backends import check_backend

    check_backend(quantum_study)  # before any work: quantum_study.backend's extra is installed
    check_feature_cache(quantum_training_data)
    return run_study(quantum_training_data, quantum_study)


def summarise_quantum_study(
    quantum_study_table: Any,
    quantum_study: QuantumStudyParams,
    quantum_metrics: dict[str, Any] | None,
) -> dict[str, Any]:
    """Intervals per contender, quantum against its twin and control paired by seed, the winner,
    and the gap to the pipeline's own quantum stage (``quantum_metrics``, ``None`` if absent)."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.study import summarise

    summary = summarise(quantum_study_table, quantum_study, quantum_metrics)
    logger.info("Quantum study: %s", summary["headline"])
    gap = summary["configured_quantum_stage"]
    if gap.get("available"):
        logger.info(
            "The pipeline's quantum stage reaches test QWK %.3f; the study's best quantum "
            "setting (%s, learning rate %g) %.3f.",
            gap["stage_test_qwk"], gap["best_study_setting"], gap["best_study_learning_rate"],
            gap["best_study_test_qwk"]["mean"],
        )
    return summary


def draw_quantum_study_figures(quantum_study_summary: dict[str, Any]) -> dict[str, Any]:
    """``{file name: figure}``: test QWK against qubit count with interval bands."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.study import study_figures

    return study_figures(quantum_study_summary)


def add_study_to_report(report_html: str | None, quantum_study_summary: dict[str, Any]) -> str:
    """report.html with the study's section (a page of its own when there is no report yet)."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.reporting.html import add_study_section

    return add_study_section(report_html, quantum_study_summary)
