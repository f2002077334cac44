"""ONNX export of the trained model with its calibration (``kedro run --pipeline export``).

The exported graph is :class:`~qsight_pipeline.inference.graph.InferenceGraph`: normalised images
``(batch, 3, S, S)`` in, the calibrated outputs named in ``OUTPUT_NAMES`` out, with a dynamic batch
axis. The quantum head exports through the torch executor (a real statevector for the angle
encoding); the ZZ encoding's complex state has no ONNX operator and is refused with a message.
The exporter is torch's TorchScript-based one (``dynamo=False``), which needs no onnxscript.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import torch

from qsight_pipeline.errors import UserError
from qsight_pipeline.inference.graph import OUTPUT_NAMES, InferenceGraph
from qsight_pipeline.inference.loading import LoadedModel

logger = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "images"


class ExportError(UserError):
    """The model has a setting that ONNX cannot express; the message names it."""


def check_exportable(loaded: LoadedModel) -> None:
    """Refuse, naming the setting, what the ONNX exporter cannot trace."""
    head = loaded.model.quantum_head
    if head is None:
        return
    quantum = loaded.model.config.quantum
    if quantum.get("shots"):
        raise ExportError(
            f"quantum.shots is {quantum.get('shots')}: the quantum head samples its outputs, which "
            "an ONNX graph cannot reproduce. Train with quantum.shots: null (exact expectation "
            "values, the default) to export."
        )
    if head.executor_name != "torch":
        # The same circuit and weights run on the torch executor, which the tracer can follow.
        logger.info("Exporting the quantum head through the torch executor (trained on %s).",
                    head.executor_name)
        head.set_executor("torch")
    if head.executor.plan.is_complex:
        raise ExportError(
            f"quantum.encoding: {quantum.get('encoding')!r} makes the simulated quantum state "
            "complex, and ONNX has no complex arithmetic, so this model cannot be exported to "
            "ONNX. Train with quantum.encoding: angle (the default; its state is real) to export, "
            "or serve this model with the PyTorch API (qsight_pipeline.load_model)."
        )


def export_onnx_bytes(loaded: LoadedModel, batch: int = 2) -> bytes:
    """The serialised ONNX model of ``loaded`` (CPU, float32 input, dynamic batch)."""
    check_exportable(loaded)
    size = int(loaded.preprocessing["image_size"])
    graph = InferenceGraph(loaded.model, loaded.temperatures).cpu().eval()
    example = torch.zeros(batch, 3, size, size)
    buffer = io.BytesIO()
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    try:
        torch.onnx.export(
            graph, (example,), buffer, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
        )
    except torch.onnx.errors.UnsupportedOperatorError as error:
        raise ExportError(
            f"ONNX export failed: {error}. The model settings in model_info.json name the part "
            "(quantum.encoding, model.encoder_name); train with exportable settings."
        ) from None
    finally:
        loaded.model.to(loaded.device)
    return buffer.getvalue()


def onnx_metadata(loaded: LoadedModel) -> dict[str, Any]:
    """What a consumer of ``model.onnx`` needs besides the graph (``model_onnx_info.json``)."""
    return {
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, loaded.preprocessing["image_size"],
                                                loaded.preprocessing["image_size"]]},
        "outputs": list(OUTPUT_NAMES),
        "preprocessing": loaded.preprocessing,
        "referral": loaded.referral,
        "temperatures": loaded.temperatures,
        # The gradability bounds and the out-of-distribution model (mean, precision, threshold)
        # that a consumer applies before trusting a grade (README, "Grading new photographs").
        "gates": loaded.gates,
        "opset": OPSET,
    }
