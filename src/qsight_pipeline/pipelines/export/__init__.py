"""``export``: the trained model with its calibration as ``model.onnx``."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
