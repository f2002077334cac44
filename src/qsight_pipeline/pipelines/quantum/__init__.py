"""``quantum``: the quantum head trained and evaluated on the feature cache alone."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
