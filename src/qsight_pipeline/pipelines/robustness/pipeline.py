"""Wiring of the ``robustness`` pipeline (the last of ``__default__``: after the report)."""

from kedro.pipeline import Node, Pipeline

from .nodes import add_robustness_to_report, measure_grade_robustness


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=measure_grade_robustness,
                inputs=["complete_checkpoint", "image_cache_test_if_any"],
                outputs="robustness",
                name="measure_grade_robustness",
                namespace="report",
            ),
            Node(
                # report_html (not an optional copy): in a full run this waits for the report.
                func=add_robustness_to_report,
                inputs=["report_html", "robustness"],
                outputs="robustness_report_html",
                name="add_robustness_to_report",
                namespace="report",
            ),
        ]
    )
