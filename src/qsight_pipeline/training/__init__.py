"""Training: stage schedule, staged trainer, resume checkpoints, devices, latency, metrics.

This package never imports Kedro; the pipelines and the Python API call into it. Its names are
imported on first use, so that reading the stage schedule (``training.stages``, pydantic only)
does not load torch and scikit-learn with the trainer.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "ScheduleError": "qsight_pipeline.training.stages",
    "Stage": "qsight_pipeline.training.stages",
    "default_stage_schedule": "qsight_pipeline.training.stages",
    "parse_stages": "qsight_pipeline.training.stages",
    "resolve_schedule": "qsight_pipeline.training.stages",
    "split_schedule": "qsight_pipeline.training.stages",
    "TrainerSettings": "qsight_pipeline.training.trainer",
    "evaluate": "qsight_pipeline.training.trainer",
    "seed_everything": "qsight_pipeline.training.trainer",
    "train_stages": "qsight_pipeline.training.trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'qsight_pipeline.training' has no attribute {name!r}")
