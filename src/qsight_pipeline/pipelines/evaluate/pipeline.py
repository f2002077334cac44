"""Wiring of the ``evaluate`` pipeline (not part of ``__default__``)."""

from kedro.pipeline import Node, Pipeline

from .nodes import add_external_to_report, evaluate_external


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=evaluate_external,
                inputs=["complete_checkpoint", "params:evaluate"],
                outputs=["external_validation", "external_predictions"],
                name="evaluate_external",
                namespace="evaluate",
            ),
            Node(
                func=add_external_to_report,
                inputs=["report_html_if_any", "external_validation"],
                outputs="external_report_html",
                name="add_external_to_report",
                namespace="evaluate",
            ),
        ]
    )
