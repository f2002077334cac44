"""Wiring of the ``classical`` pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import train_classical_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=train_classical_model,
                inputs=["image_cache_train", "image_cache_val", "manifest", "parameters"],
                outputs=["phase1_classical_model", "classical_history"],
                name="train_classical_model",
            )
        ]
    )
