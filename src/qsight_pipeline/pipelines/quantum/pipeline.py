"""Wiring of the ``quantum`` pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import train_quantum_head


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=train_quantum_head,
                inputs=["quantum_training_data", "parameters"],
                outputs=["quantum_head", "quantum_history", "quantum_metrics"],
                name="train_quantum_head",
            )
        ]
    )
