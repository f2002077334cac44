"""Wiring of the ``classical`` pipeline."""

from kedro.pipeline import Node, Pipeline

from qsight_pipeline.kedro_app.model_inputs import model_inputs_node
from qsight_pipeline.kedro_app.run_config import run_settings_node

from .nodes import classical_model_config, embed_frozen_encoder, train_classical_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            run_settings_node(),
            Node(
                func=classical_model_config,
                inputs=["run_config", "params:model", "params:quantum"],
                outputs="model_config",
                name="classical_model_config",
                namespace="classical",
            ),
            Node(
                func=embed_frozen_encoder,
                inputs=[
                    "image_cache_train",
                    "image_cache_val",
                    "image_cache_test",
                    "run_config",
                    "model_config",
                ],
                outputs=["embedding_cache_train", "embedding_cache_val", "embedding_cache_test"],
                name="embed_frozen_encoder",
                namespace="classical",
            ),
            model_inputs_node(),
            Node(
                func=train_classical_model,
                inputs=[
                    "model_inputs",
                    "manifest",
                    "run_config",
                    "model_config",
                    "params:augmentation",
                ],
                outputs=["phase1_classical_model", "classical_history"],
                name="train_classical_model",
                namespace="classical",
            )
        ]
    )
