"""The ``predict`` block."""

from __future__ import annotations

from pydantic import Field, field_validator

from qsight_pipeline.config.base import ParamsBlock
from qsight_pipeline.config.devices import parse_device


class GradabilityOverrides(ParamsBlock):
    """``predict.gradability``: replace bounds of the gate saved with the model for this run
    (null keeps the saved one). ``<measure>_min`` / ``<measure>_max`` for the gradability
    measures (docs/grading.md, "Gradable?"), ``ood_threshold`` for the out-of-distribution score."""

    field_fraction_min: float | None = None
    field_side_height_max: float | None = None
    field_roundness_min: float | None = None
    brightness_min: float | None = None
    brightness_max: float | None = None
    dark_fraction_max: float | None = None
    burnt_out_fraction_max: float | None = None
    illumination_evenness_min: float | None = None
    blur_max: float | None = None
    noise_max: float | None = None
    resolution_min: float | None = None
    ood_threshold: float | None = None

    def overrides(self) -> dict[str, float]:
        """The bounds that are set."""
        return {key: value for key, value in self.to_dict().items() if value is not None}


class PredictParams(ParamsBlock):
    """Grading a folder of new photographs with ``complete_checkpoint.pth``.

    ``device``: auto | cpu | mps | cuda | cuda:<index>, the rule of the run's ``device``.
    ``heatmaps``: also write a Grad-CAM overlay PNG per image into
    ``data/07_model_output/heatmaps/`` (beside ``predictions.csv``).
    ``gradability``: overrides of the gate's saved bounds (:class:`GradabilityOverrides`).
    """

    input_dir: str = "data/01_raw/sample/resized_train/resized_train"
    batch_size: int = Field(32, ge=1)
    device: str = "cpu"
    heatmaps: bool = False
    gradability: GradabilityOverrides = Field(default_factory=GradabilityOverrides)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        parse_device(value)  # the one rule (config.devices); the value is kept as written
        return value
