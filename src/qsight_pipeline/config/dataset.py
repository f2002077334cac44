"""The ``dataset`` and ``ingestion`` blocks (pipeline ``ingestion``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from qsight_pipeline.config.base import ParamsBlock


class DatasetParams(ParamsBlock):
    """Where the fundus photographs are, and in which of the Kaggle layouts."""

    type: str = "tanlikesmath"
    root: str = "data/01_raw/sample"

    @field_validator("type")
    @classmethod
    def _registered_layout(cls, value: str) -> str:
        # The layout registry (data/layouts/) decides which names exist; it loads pandas and
        # Pillow, not the model stack, and only when parameters are validated.
        # lazy: kept out of kedro start-up
        from qsight_pipeline.data.layouts import layout_names

        if value not in layout_names():
            raise ValueError(f"must be a registered dataset layout: {', '.join(layout_names())}")
        return value


class IngestionParams(ParamsBlock):
    """How the dataset is split and decoded once into the image cache."""

    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.15, gt=0, lt=1)
    on_bad_image: Literal["fail", "skip"] = "fail"
    workers: int | None = Field(None, ge=1)
    # Images whose header claims more pixels are refused before decoding (data.image_cache).
    max_pixels: int = Field(50_000_000, ge=1)

    @model_validator(mode="after")
    def _fractions_leave_a_training_split(self) -> IngestionParams:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                "val_fraction + test_fraction must be below 1 so that patients remain for training"
            )
        return self
