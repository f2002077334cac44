"""Wiring of the ``features`` pipeline."""

from kedro.pipeline import Node, Pipeline

from qsight_pipeline.kedro_app.model_inputs import model_inputs_node
from qsight_pipeline.kedro_app.run_config import run_settings_node

from .nodes import export_quantum_training_data


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            run_settings_node(),
            model_inputs_node(),
            Node(
                func=export_quantum_training_data,
                inputs=["phase1_classical_model", "model_inputs", "manifest", "run_config"],
                outputs="quantum_training_data",
                name="export_quantum_training_data",
                namespace="features",
            )
        ]
    )
