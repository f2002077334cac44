"""The ``tracking`` block: Weights & Biases and MLflow."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from qsight_pipeline.config.base import ParamsBlock


class WandbParams(ParamsBlock):
    enabled: bool = False
    project: str = "qsight"
    entity: str | None = None
    run_name: str | None = None
    mode: Literal["online", "offline", "disabled"] = "online"
    tags: list[str] = Field(default_factory=list)
    dir: str | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _split_tags(cls, value: object) -> object:
        # `--params tracking.wandb.tags=a,b` arrives as one string (or a number).
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return [tag.strip() for tag in str(value).split(",") if tag.strip()]
        if isinstance(value, list):
            return [str(tag) for tag in value]
        return value


class MlflowParams(ParamsBlock):
    enabled: bool = True


class TrackingParams(ParamsBlock):
    wandb: WandbParams = Field(default_factory=WandbParams)
    mlflow: MlflowParams = Field(default_factory=MlflowParams)
