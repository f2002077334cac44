"""``ensemble``: the ensemble fine-tuned on the cache, the final artifacts and the report."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
