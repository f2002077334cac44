"""``predict``: grade a folder of new photographs with a trained model."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
