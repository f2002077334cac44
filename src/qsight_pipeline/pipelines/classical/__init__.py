"""``classical``: the image stages of the schedule (encoder, compression, heads A/B, ensemble)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
