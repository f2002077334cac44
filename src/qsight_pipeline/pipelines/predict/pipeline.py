"""Wiring of the ``predict`` pipeline (not part of ``__default__``)."""

from kedro.pipeline import Node, Pipeline

from .nodes import predict_grades


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=predict_grades,
                inputs=["complete_checkpoint", "params:predict"],
                outputs=["predictions", "prediction_heatmaps"],
                name="predict_grades",
                namespace="predict",
            )
        ]
    )
