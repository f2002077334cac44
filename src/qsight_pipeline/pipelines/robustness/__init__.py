"""``robustness``: the trained model's grades under benign changes to the test photographs."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
