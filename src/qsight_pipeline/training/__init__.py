"""Training: stage schedule, staged trainer, resume checkpoints, devices, latency, metrics.

This package never imports Kedro; the pipelines and the Python API call into it. Its names are
imported on first use, so that reading the stage schedule (``training.stages``, pydantic only)
does not load torch and scikit-learn with the trainer.
"""

from __future__ import annotations

from qsight_pipeline.lazy_exports import lazy_getattr

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


# Imported on first use: `kedro` commands import this package and need not load torch.
__getattr__ = lazy_getattr(__name__, _EXPORTS)
