"""``quantum_study``: the fair quantum-vs-classical comparison, from the feature cache alone."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
