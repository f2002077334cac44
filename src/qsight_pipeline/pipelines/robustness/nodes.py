"""Nodes of the ``robustness`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def measure_grade_robustness(complete_checkpoint: dict[str, Any], image_cache_test: Any) -> dict[str, Any]:
    """``robustness``: the share of the test split's grades (and referrals) that change when each
    photograph is re-saved as JPEG at quality 90, resized by 2% or made 5% brighter, and a
    verdict in words (``inference.robustness``). No test image cache: nothing measured, said so.
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.inference.loading import loaded_from_checkpoint
    from qsight_pipeline.inference.robustness import measure_robustness

    loaded = loaded_from_checkpoint(complete_checkpoint, "cpu")
    result = measure_robustness(loaded, image_cache_test)
    (logger.warning if result["grades_flip"] else logger.info)("Robustness: %s", result["verdict"])
    return result


def add_robustness_to_report(report_html: str | None, robustness: dict[str, Any]) -> str:
    """report.html with the robustness section (a page of its own when there is no report)."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.reporting.html import add_robustness_section

    return add_robustness_section(report_html, robustness)
