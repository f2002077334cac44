"""``quantum_hardware``: the trained quantum head under device noise, shots and mitigation."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
