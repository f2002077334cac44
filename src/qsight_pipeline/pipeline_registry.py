"""Project pipelines: one per stage of the data flow, and ``__default__`` for all of them."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# The order of the data flow. ``predict``, ``export``, ``quantum_study`` and ``quantum_hardware``
# are registered too (``find_pipelines`` finds every package under ``pipelines/``) but are separate
# jobs, not part of ``__default__``.
TRAINING_PIPELINES = ("ingestion", "classical", "features", "quantum", "ensemble")


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (pipelines[name] for name in TRAINING_PIPELINES if name in pipelines), Pipeline([])
    )
    return pipelines
