"""The ``predict`` block."""

from __future__ import annotations

from pydantic import Field

from qsight_pipeline.config.base import ParamsBlock


class PredictParams(ParamsBlock):
    """Grading a folder of new photographs with ``complete_checkpoint.pth``.

    ``device``: auto | cpu | cuda | cuda:<index>. ``heatmaps``: also write a Grad-CAM overlay PNG
    per image into ``data/07_model_output/heatmaps/`` (beside ``predictions.csv``).
    """

    input_dir: str = "data/01_raw/sample/resized_train/resized_train"
    batch_size: int = Field(32, ge=1)
    device: str = Field("cpu", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    heatmaps: bool = False
