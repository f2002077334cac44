"""Training: stage schedule, staged trainer, resume checkpoints, devices, latency, metrics.

This package never imports Kedro; the pipelines and the Python API call into it.
"""

from qsight_pipeline.training.stages import (
    ScheduleError,
    Stage,
    default_stage_schedule,
    parse_stages,
    resolve_schedule,
    split_schedule,
)
from qsight_pipeline.training.trainer import (
    TrainerSettings,
    evaluate,
    seed_everything,
    train_stages,
)

__all__ = [
    "ScheduleError",
    "Stage",
    "TrainerSettings",
    "default_stage_schedule",
    "evaluate",
    "parse_stages",
    "resolve_schedule",
    "seed_everything",
    "split_schedule",
    "train_stages",
]
