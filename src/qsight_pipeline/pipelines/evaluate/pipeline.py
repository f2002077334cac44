"""Wiring of the ``evaluate`` pipeline (not part of ``__default__``)."""

from kedro.pipeline import Node, Pipeline

from .nodes import evaluate_external


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=evaluate_external,
                inputs=["complete_checkpoint", "params:evaluate"],
                outputs=["external_validation", "external_predictions"],
                name="evaluate_external",
                namespace="evaluate",
            )
        ]
    )
