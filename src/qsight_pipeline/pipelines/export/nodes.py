"""Nodes of the ``export`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def export_onnx(complete_checkpoint: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The model and its calibration as ONNX.

    Returns:
        ``model_onnx``: the serialised ONNX graph (normalised images in, calibrated outputs out);
        ``model_onnx_info``: its input, outputs, preprocessing and referral operating point.
    """
    from qsight_pipeline.inference.export import export_onnx_bytes, onnx_metadata
    from qsight_pipeline.inference.loading import loaded_from_checkpoint

    loaded = loaded_from_checkpoint(complete_checkpoint, "cpu")
    onnx_bytes = export_onnx_bytes(loaded)
    logger.info("Exported model.onnx (%.1f MB)", len(onnx_bytes) / 1e6)
    return onnx_bytes, onnx_metadata(loaded)
