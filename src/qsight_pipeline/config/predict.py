"""The ``predict`` block."""

from __future__ import annotations

from pydantic import Field, field_validator

from qsight_pipeline.config.base import ParamsBlock
from qsight_pipeline.config.devices import parse_device


class PredictParams(ParamsBlock):
    """Grading a folder of new photographs with ``complete_checkpoint.pth``.

    ``device``: auto | cpu | mps | cuda | cuda:<index>, the rule of the run's ``device``.
    ``heatmaps``: also write a Grad-CAM overlay PNG per image into
    ``data/07_model_output/heatmaps/`` (beside ``predictions.csv``).
    """

    input_dir: str = "data/01_raw/sample/resized_train/resized_train"
    batch_size: int = Field(32, ge=1)
    device: str = "cpu"
    heatmaps: bool = False

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        parse_device(value)  # the one rule (config.devices); the value is kept as written
        return value
