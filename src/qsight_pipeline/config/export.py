"""The ``export`` block: what ``kedro run --pipelines export`` writes besides ``model.onnx``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from qsight_pipeline.config.base import ParamsBlock


class ExportParams(ParamsBlock):
    """``quantize``: ``none`` (only the float ``model.onnx``) or ``int8`` (also
    ``model.int8.onnx``: onnxruntime's static quantisation calibrated on the training image
    cache, dynamic without it; operators that cannot be quantised stay float and are named in
    ``model_onnx_info.json["int8"]``).

    ``int8_agreement`` / ``int8_max_difference``: on the validation image cache, the int8 grades
    must agree with the float ones on at least this share of pictures and no ensemble probability
    may move by more than this; otherwise the layers whose quantisation moves the outputs most
    stay float, the fewest that meet both (accuracy-aware mixed precision)."""

    quantize: Literal["none", "int8"] = "none"
    int8_agreement: float = Field(0.99, ge=0.0, le=1.0)
    int8_max_difference: float = Field(0.02, ge=0.0, le=1.0)
