"""Turn Kedro parameters into the library's config objects, with messages that name the setting.

Nodes call these helpers so that every pipeline reads a setting the same way. ``fingerprint``
(re-exported from ``training.checkpoints``) names what a node's training depends on.
"""

from __future__ import annotations

from typing import Any

from qsight_pipeline.models.hybrid import ModelConfig
from qsight_pipeline.training.checkpoints import fingerprint as fingerprint  # re-exported
from qsight_pipeline.training.stages import Stage, resolve_schedule, split_schedule
from qsight_pipeline.training.trainer import TrainerSettings


def model_config(parameters: dict[str, Any]) -> ModelConfig:
    return ModelConfig.from_params(
        parameters.get("model") or {}, parameters.get("quantum"), parameters["image_size"]
    )


def trainer_settings(parameters: dict[str, Any]) -> TrainerSettings:
    return TrainerSettings.from_params(parameters)


def schedule(parameters: dict[str, Any]) -> dict[str, list[Stage]]:
    """The validated stage schedule, split into the classical, quantum and ensemble parts."""
    stages = resolve_schedule(parameters.get("stages"), parameters.get("stages_config"))
    return split_schedule(stages)


def batch_size(parameters: dict[str, Any]) -> int:
    value = parameters.get("batch_size", 16)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"batch_size must be a positive integer, got {value!r}.")
    return value
