"""The ``export`` block: what ``kedro run --pipeline export`` writes besides ``model.onnx``."""

from __future__ import annotations

from typing import Literal

from qsight_pipeline.config.base import ParamsBlock


class ExportParams(ParamsBlock):
    """``quantize``: ``none`` (only the float ``model.onnx``) or ``int8`` (also
    ``model.int8.onnx``: int8 weights through onnxruntime's dynamic quantisation; operators that
    cannot be quantised stay float and are named in ``model_onnx_info.json["int8"]``)."""

    quantize: Literal["none", "int8"] = "none"
