"""Nodes of the ``export`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

from qsight_pipeline.config import ExportParams

logger = logging.getLogger(__name__)


def export_onnx(
    complete_checkpoint: dict[str, Any],
    export: ExportParams = ExportParams(),  # noqa: B008 - a frozen block
    image_cache_train: Any = None,
    image_cache_val: Any = None,
) -> tuple[bytes, dict[str, Any], dict[str, bytes]]:
    """The model and its calibration as ONNX.

    Returns:
        ``model_onnx``: the serialised ONNX graph (normalised images in, calibrated outputs out);
        ``model_onnx_info``: its input, outputs, preprocessing, referral operating point, gate and,
        with ``export.quantize: int8``, the quantisation report (``int8``);
        ``model_onnx_int8``: ``{"model.int8": bytes}`` when quantised, else empty. The training
        image cache (when there) calibrates the int8 activations (static quantisation);
        without it the quantisation is dynamic. The validation image cache (when there) checks
        the int8 grades against the float ones and keeps float the layers that move them
        (``export.int8_agreement``, ``export.int8_max_difference``); without it, unchecked.
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.inference.export import export_onnx_bytes, onnx_metadata, quantize_int8
    from qsight_pipeline.inference.loading import loaded_from_checkpoint

    loaded = loaded_from_checkpoint(complete_checkpoint, "cpu")
    onnx_bytes = export_onnx_bytes(loaded)
    logger.info("Exported model.onnx (%.1f MB)", len(onnx_bytes) / 1e6)
    info = onnx_metadata(loaded)
    int8: dict[str, bytes] = {}
    if export.quantize == "int8":
        if image_cache_val is None:
            logger.warning("No validation image cache (data/05_model_input/image_cache_val.npy): "
                           "the int8 model's agreement with the float one is not checked. Run "
                           "`kedro run --pipelines ingestion` to make it.")
        quantized, report = quantize_int8(
            onnx_bytes, image_cache_train, loaded.preprocessing, image_cache_val,
            {"agreement": export.int8_agreement, "max_difference": export.int8_max_difference},
        )
        info["int8"] = {**report, "file": "model.int8.onnx" if quantized else None}
        if quantized:
            int8["model.int8"] = quantized
            logger.info("Exported model.int8.onnx (%.1f MB; %d nodes left float)",
                        len(quantized) / 1e6, len(report["left_float"]))
    return onnx_bytes, info, int8
