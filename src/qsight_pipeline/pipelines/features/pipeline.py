"""Wiring of the ``features`` pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import export_quantum_training_data


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=export_quantum_training_data,
                inputs=[
                    "phase1_classical_model",
                    "image_cache_train",
                    "image_cache_val",
                    "image_cache_test",
                    "manifest",
                    "parameters",
                ],
                outputs="quantum_training_data",
                name="export_quantum_training_data",
            )
        ]
    )
