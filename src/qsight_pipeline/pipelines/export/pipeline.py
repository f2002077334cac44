"""Wiring of the ``export`` pipeline (not part of ``__default__``)."""

from kedro.pipeline import Node, Pipeline

from .nodes import export_onnx


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=export_onnx,
                inputs=["complete_checkpoint", "params:export", "image_cache_train_if_any",
                        "image_cache_val_if_any"],
                outputs=["model_onnx", "model_onnx_info", "model_onnx_int8"],
                name="export_onnx",
                namespace="export",
            )
        ]
    )
