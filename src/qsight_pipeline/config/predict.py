"""The ``predict`` block."""

from __future__ import annotations

from pydantic import Field

from qsight_pipeline.config.base import ParamsBlock


class PredictParams(ParamsBlock):
    """Grading a folder of new photographs with ``complete_checkpoint.pth``."""

    input_dir: str = "data/01_raw/sample/resized_train/resized_train"
    batch_size: int = Field(32, ge=1)
