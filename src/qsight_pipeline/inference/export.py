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


def _session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def _unimplemented_node(error: Exception, model: Any) -> tuple[str, str] | None:
    """``(node name, op type)`` of the node onnxruntime names in a load error, if any."""
    text = str(error)
    for node in model.graph.node:
        if node.name and f"'{node.name}'" in text or f"name '{node.name}'" in text:
            return node.name, node.op_type
    return None


class _Notes(logging.Handler):
    """Collects the tensors onnxruntime's quantiser says it cannot quantise (it logs them)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.tensors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        import re

        match = re.search(r"unsupported type to quantize for tensor '([^']+)'", record.getMessage())
        if match and match.group(1) not in self.tensors:
            self.tensors.append(match.group(1))


class _quantizer_notes:  # noqa: N801 - a context manager used like a function
    def __enter__(self) -> list[str]:
        self.handler = _Notes()
        self.level = logging.root.level
        logging.root.addHandler(self.handler)
        return self.handler.tensors

    def __exit__(self, *exc: object) -> None:
        logging.root.removeHandler(self.handler)


def quantize_int8(
    onnx_bytes: bytes, calibration: Any = None, preprocessing: dict[str, Any] | None = None
) -> tuple[bytes | None, dict[str, Any]]:
    """``model.onnx`` quantised to int8 with onnxruntime, or None when that fails.

    With ``calibration`` (uint8 ``(N, S, S, 3)`` pictures, e.g. the training image cache) and the
    model's ``preprocessing``: static quantisation (QDQ format, per-channel int8 weights, uint8
    activations whose ranges come from those pictures) of Conv, MatMul and Gemm. Without them:
    dynamic quantisation (int8 weights, activations quantised on the fly). A node the quantiser
    cannot handle stays float and is named in the report (``left_float``); when onnxruntime cannot
    run the result, that node's op type is left float and it tries again; if quantisation fails
    altogether the report holds the ``error`` and only the float ``model.onnx`` is written.
    """
    import tempfile
    from pathlib import Path

    import numpy as np
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    model = onnx.load_from_string(onnx_bytes)
    candidates = sorted({n.op_type for n in model.graph.node} & {"MatMul", "Gemm", "Conv"})
    static = calibration is not None and len(calibration) > 0 and preprocessing is not None
    report: dict[str, Any] = {
        "method": ("onnxruntime static quantisation (QDQ, per-channel int8 weights, uint8 "
                   f"activations calibrated on {min(len(calibration), CALIBRATION_IMAGES)} training "
                   "pictures)") if static else "onnxruntime dynamic quantisation (int8 weights)",
        "left_float": [], "error": None,
    }

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            from qsight_pipeline.inference.predict import normalise

            rows = np.linspace(0, len(calibration) - 1, min(len(calibration), CALIBRATION_IMAGES))
            pictures = np.asarray(calibration[np.unique(rows.round().astype(int))])
            batches = [normalise(pictures[i : i + 8], preprocessing).numpy()
                       for i in range(0, len(pictures), 8)]
            self._batches = iter({INPUT_NAME: batch} for batch in batches)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory(prefix="qsight_int8_") as folder:
        source, target = Path(folder) / "model.onnx", Path(folder) / "model.int8.onnx"
        source.write_bytes(onnx_bytes)
        while candidates:
            try:
                with _quantizer_notes() as notes:
                    if static:
                        quantize_static(source, target, _Reader(), quant_format=QuantFormat.QDQ,
                                        per_channel=True, weight_type=QuantType.QInt8,
                                        activation_type=QuantType.QUInt8,
                                        op_types_to_quantize=candidates)
                    else:
                        quantize_dynamic(source, target, weight_type=QuantType.QInt8,
                                         op_types_to_quantize=candidates)
                _note_left_float(notes, model, report)
                quantized = target.read_bytes()
                _session(quantized)
            except Exception as error:  # noqa: BLE001 - any failure leaves the float model only
                named = _unimplemented_node(error, onnx.load_from_string(target.read_bytes())) \
                    if target.is_file() else None
                if named is None:
                    report["error"] = f"{type(error).__name__}: {str(error)[:300]}"
                    logger.warning("int8 quantisation failed (%s); only the float model.onnx is "
                                   "written.", report["error"])
                    return None, report
                name, op_type = named
                op = next((c for c in candidates if c in op_type), candidates[-1])
                report["left_float"].append({"node": name, "op_type": op_type,
                                             "reason": f"onnxruntime cannot run it quantised; "
                                                       f"every {op} stays float"})
                logger.warning("Operator %s (%s) cannot run quantised; %s nodes stay float.",
                               name, op_type, op)
                candidates = [c for c in candidates if c != op]
                continue
            report["quantized_op_types"] = candidates
            return quantized, report
    report["error"] = "no operator could be quantised"
    return None, report


CALIBRATION_IMAGES = 128


def _note_left_float(notes: list[str], model: Any, report: dict[str, Any]) -> None:
    for tensor in notes:
        consumer = next((n for n in model.graph.node if tensor in n.input), None)
        node = consumer.name if consumer else tensor
        if any(e["node"] == node for e in report["left_float"]):
            continue
        report["left_float"].append({
            "node": node, "op_type": consumer.op_type if consumer else None,
            "reason": f"input {tensor} is not a float32 tensor onnxruntime can quantise",
        })
        logger.warning("Not quantised: %s (%s) stays float (input %s is not float32).",
                       node, report["left_float"][-1]["op_type"], tensor)
