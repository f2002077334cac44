"""Wiring of the ``quantum`` pipeline."""

from kedro.pipeline import Node, Pipeline

from qsight_pipeline.kedro_app.run_config import run_settings_node

from .nodes import train_quantum_head


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            run_settings_node(),
            Node(
                func=train_quantum_head,
                inputs=["quantum_training_data", "run_config", "params:quantum"],
                outputs=["quantum_head", "quantum_history", "quantum_metrics"],
                name="train_quantum_head",
                namespace="quantum",
            )
        ]
    )
