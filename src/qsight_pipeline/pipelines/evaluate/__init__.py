"""``evaluate``: external validation of a trained model on another labelled data set."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
