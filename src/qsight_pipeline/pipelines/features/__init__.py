"""``features``: the frozen classical model turned into the feature cache the later stages read."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
