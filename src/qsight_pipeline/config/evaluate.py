"""The ``evaluate`` block: external validation of a trained model on another labelled data set."""

from __future__ import annotations

from pydantic import Field, field_validator

from qsight_pipeline.config.base import ParamsBlock
from qsight_pipeline.config.dataset import DatasetParams
from qsight_pipeline.config.devices import parse_device


class EvaluateParams(ParamsBlock):
    """``kedro run --pipelines evaluate``: grade every labelled photograph of ``dataset`` (a
    registered layout and its root, as ``dataset`` for training) with the trained model, its
    saved calibration, threshold and gate, and measure the result against the labels.

    ``transfer_tolerance``: the verdict says the model transfers to the set when its QWK there
    is at most this much below its QWK on its own test split.
    """

    dataset: DatasetParams = Field(
        default_factory=lambda: DatasetParams(type="sovitrath", root="data/01_raw/external")
    )
    batch_size: int = Field(32, ge=1)
    device: str = "cpu"
    transfer_tolerance: float = Field(0.1, ge=0.0, le=2.0)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        parse_device(value)
        return value
