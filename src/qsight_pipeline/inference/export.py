"""ONNX export of the trained model with its calibration (``kedro run --pipelines export``).

The exported graph is :class:`~qsight_pipeline.inference.graph.InferenceGraph`: normalised images
``(batch, 3, S, S)`` in, the calibrated outputs named in ``OUTPUT_NAMES`` out, with a dynamic batch
axis. The quantum head exports through the torch executor (a real statevector for the angle
encoding); the ZZ encoding's complex state has no ONNX operator and is refused with a message.
The exporter is torch's TorchScript-based one (``dynamo=False``), which needs no onnxscript.

The graph starts after the one pixel path's pictures are normalised, so the preprocessing that
makes its input is recorded beside it, for a consumer who calls onnxruntime directly: in
``model_onnx_info.json`` (``preprocessing``, as ``model_info.json`` saves it, and
``preprocessing_steps`` in words) and in the ``.onnx`` file's own metadata
(``qsight.preprocessing`` as JSON, ``qsight.preprocessing_steps``). Which output the gate's
out-of-distribution score reads (``encoder_features``, the last; ``compressed_features`` for a
gate saved before its space was recorded) is ``gate_features_output`` in ``model_onnx_info.json``
and ``qsight.gate_features_output`` in the file's metadata.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qsight_pipeline.data.preprocessing import from_saved
from qsight_pipeline.errors import UserError
from qsight_pipeline.inference.graph import OUTPUT_NAMES, InferenceGraph
from qsight_pipeline.inference.loading import LoadedModel
from qsight_pipeline.inference.ood import features_output
from qsight_pipeline.inference.predict import normalise

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
    graph = InferenceGraph(loaded.model, loaded.temperatures, loaded.graph.fusion).cpu().eval()
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
    return with_preprocessing_metadata(buffer.getvalue(), loaded.preprocessing, gate_features_output(loaded))


def gate_features_output(loaded: LoadedModel) -> str | None:
    """The graph output whose row the gate's out-of-distribution score reads
    (``encoder_features``; ``compressed_features`` for a gate saved before the space was
    recorded), or None for a model without that gate."""
    return features_output(loaded.gates)


def with_preprocessing_metadata(
    onnx_bytes: bytes, preprocessing: dict[str, Any], gate_output: str | None = None
) -> bytes:
    """``onnx_bytes`` with the preprocessing in the model's metadata (``metadata_props``):
    ``qsight.preprocessing`` (JSON) and ``qsight.preprocessing_steps`` (the steps in words), and
    ``qsight.gate_features_output``, the output the gate scores (``gate_output``, when given)."""
    try:
        # lazy: optional dependency
        import onnx
    except ImportError:  # the graph is still right; model_onnx_info.json records the same
        return onnx_bytes
    model = onnx.load_from_string(onnx_bytes)
    settings = from_saved(preprocessing)
    props = {
        "qsight.preprocessing": json.dumps(settings.to_dict()),
        "qsight.preprocessing_steps": "\n".join(settings.recipe()),
    }
    if gate_output is not None:
        props["qsight.gate_features_output"] = gate_output
    onnx.helper.set_model_props(model, props)
    return model.SerializeToString()


def onnx_metadata(loaded: LoadedModel) -> dict[str, Any]:
    """What a consumer of ``model.onnx`` needs besides the graph (``model_onnx_info.json``)."""
    return {
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, loaded.preprocessing["image_size"],
                                                loaded.preprocessing["image_size"]]},
        "outputs": list(OUTPUT_NAMES),
        # The output whose row the gate's out-of-distribution score reads (gates.ood.space).
        "gate_features_output": gate_features_output(loaded),
        "preprocessing": loaded.preprocessing,
        # The same, as steps to follow without this package (also in model.onnx's metadata).
        "preprocessing_steps": from_saved(loaded.preprocessing).recipe(),
        "referral": loaded.referral,
        "temperatures": loaded.temperatures,
        "fusion": loaded.graph.fusion,  # how the graph fuses the heads: gated or mean
        # The gradability bounds and the out-of-distribution model (its detectors, threshold, space)
        # that a consumer applies before trusting a grade (docs/grading.md).
        "gates": loaded.gates,
        "opset": OPSET,
    }


def _session(model_bytes: bytes) -> Any:
    # lazy: optional dependency
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
    onnx_bytes: bytes, calibration: Any = None, preprocessing: dict[str, Any] | None = None,
    check: Any = None, targets: dict[str, float] | None = None,
) -> tuple[bytes | None, dict[str, Any]]:
    """``model.onnx`` quantised to int8 with onnxruntime, or None when that fails.

    With ``calibration`` (uint8 ``(N, S, S, 3)`` pictures, e.g. the training image cache) and the
    model's ``preprocessing``: static quantisation (QDQ format, per-channel int8 weights, uint8
    activations whose ranges come from those pictures) of Conv, MatMul and Gemm. Without them:
    dynamic quantisation (int8 weights, activations quantised on the fly). A node the quantiser
    cannot handle stays float and is named in the report (``left_float``); when onnxruntime cannot
    run the result, that node's op type is left float and it tries again; if quantisation fails
    altogether the report holds the ``error`` and only the float ``model.onnx`` is written.

    With ``check`` pictures (e.g. the validation image cache) the result is accuracy-aware: when
    the int8 grades agree with the float ones on fewer than ``targets["agreement"]`` of them, or
    an ensemble probability moves by more than ``targets["max_difference"]``, the nodes whose
    quantisation alone moves the outputs most are kept float, the fewest that meet both targets
    (:func:`_keep_sensitive_nodes_float`). What was measured is in ``report["check"]``; when no
    mix meets the targets nothing int8 is written.
    """
    # lazy: optional dependency
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    candidates = sorted({n.op_type for n in model.graph.node} & {"MatMul", "Gemm", "Conv"})
    static = calibration is not None and len(calibration) > 0 and preprocessing is not None
    report: dict[str, Any] = {
        "method": ("onnxruntime static quantisation (QDQ, per-channel int8 weights, uint8 "
                   f"activations calibrated on {min(len(calibration), CALIBRATION_IMAGES)} training "
                   "pictures)") if static else "onnxruntime dynamic quantisation (int8 weights)",
        "left_float": [], "error": None,
    }
    with tempfile.TemporaryDirectory(prefix="qsight_int8_") as folder:
        quantizer = _Quantizer(
            Path(folder), onnx_bytes, model, calibration if static else None, preprocessing
        )
        quantized, candidates = _quantize_runnable(quantizer, model, candidates, report)
        if quantized is None:
            return None, report
        report["quantized_op_types"] = candidates
        if check is not None and len(check) > 0 and preprocessing is not None:
            quantized = _keep_sensitive_nodes_float(
                quantizer, quantized, candidates, _check_batch(check, preprocessing),
                {**DEFAULT_INT8_TARGETS, **(targets or {})}, report,
            )
    return quantized, report


DEFAULT_INT8_TARGETS = {"agreement": 0.99, "max_difference": 0.02}
CHECK_IMAGES = 256


class _Quantizer:
    """One onnxruntime quantisation of the float model into a scratch folder, static or dynamic."""

    def __init__(
        self, folder: Any, onnx_bytes: bytes, model: Any, calibration: Any, preprocessing: Any
    ) -> None:
        self.source, self.target = folder / "model.onnx", folder / "model.int8.onnx"
        self.source.write_bytes(onnx_bytes)
        self.float_bytes, self.model = onnx_bytes, model  # the float model, and its parsed graph
        self.calibration, self.preprocessing = calibration, preprocessing

    def _reader(self) -> Any:
        # lazy: optional dependency
        from onnxruntime.quantization import CalibrationDataReader


        rows = np.linspace(0, len(self.calibration) - 1, min(len(self.calibration), CALIBRATION_IMAGES))
        pictures = np.asarray(self.calibration[np.unique(rows.round().astype(int))])
        batches = iter([{INPUT_NAME: normalise(pictures[i : i + 8], self.preprocessing).numpy()}
                        for i in range(0, len(pictures), 8)])

        class Reader(CalibrationDataReader):
            def get_next(self) -> dict[str, Any] | None:
                return next(batches, None)

        return Reader()

    def __call__(self, op_types: list[str], exclude: list[str] | None = None,
                 only: list[str] | None = None) -> tuple[bytes, list[str]]:
        """The quantised model's bytes and the tensors the quantiser said it could not handle."""
        # lazy: optional dependency
        from onnxruntime.quantization import (
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        scope = {"op_types_to_quantize": op_types, "nodes_to_exclude": exclude or [],
                 "nodes_to_quantize": only or []}
        with _quantizer_notes() as notes:
            if self.calibration is not None:
                quantize_static(self.source, self.target, self._reader(), quant_format=QuantFormat.QDQ,
                                per_channel=True, weight_type=QuantType.QInt8,
                                activation_type=QuantType.QUInt8, **scope)
            else:
                quantize_dynamic(self.source, self.target, weight_type=QuantType.QInt8, **scope)
        return self.target.read_bytes(), list(notes)


def _quantize_runnable(
    quantizer: _Quantizer, model: Any, candidates: list[str], report: dict[str, Any]
) -> tuple[bytes | None, list[str]]:
    """Quantise every candidate op type; drop the op type of a node onnxruntime cannot run."""
    # lazy: optional dependency
    import onnx

    while candidates:
        try:
            quantized, notes = quantizer(candidates)
            _note_left_float(notes, model, report)
            _session(quantized)
            return quantized, candidates
        except Exception as error:  # noqa: BLE001 - any failure leaves the float model only
            named = _unimplemented_node(error, onnx.load_from_string(quantizer.target.read_bytes())) \
                if quantizer.target.is_file() else None
            if named is None:
                report["error"] = f"{type(error).__name__}: {str(error)[:300]}"
                logger.warning("int8 quantisation failed (%s); only the float model.onnx is "
                               "written.", report["error"])
                return None, candidates
            name, op_type = named
            op = next((c for c in candidates if c in op_type), candidates[-1])
            report["left_float"].append({"node": name, "op_type": op_type,
                                         "reason": f"onnxruntime cannot run it quantised; "
                                                   f"every {op} stays float"})
            logger.warning("Operator %s (%s) cannot run quantised; %s nodes stay float.",
                           name, op_type, op)
            candidates = [c for c in candidates if c != op]
    report["error"] = "no operator could be quantised"
    return None, candidates


def _check_batch(check: Any, preprocessing: dict[str, Any]) -> Any:
    """Up to ``CHECK_IMAGES`` of the check pictures, evenly spread, normalised."""
    rows = np.unique(np.linspace(0, len(check) - 1, min(len(check), CHECK_IMAGES)).round().astype(int))
    return normalise(np.asarray(check[rows]), preprocessing).numpy()


def _probabilities(model_bytes: bytes, batch: Any) -> Any:
    session = _session(model_bytes)
    index = OUTPUT_NAMES.index("ensemble_probs")
    return np.concatenate([session.run(None, {INPUT_NAME: batch[i : i + 32]})[index]
                           for i in range(0, len(batch), 32)])


def _agreement(reference: Any, model_bytes: bytes, batch: Any) -> dict[str, float]:
    probs = _probabilities(model_bytes, batch)
    return {"grade_agreement": float(np.mean(probs.argmax(1) == reference.argmax(1))),
            "max_probability_difference": float(np.abs(probs - reference).max())}


def _meets(measured: dict[str, float], targets: dict[str, float]) -> bool:
    return (measured["grade_agreement"] >= targets["agreement"]
            and measured["max_probability_difference"] <= targets["max_difference"])


def _keep_sensitive_nodes_float(
    quantizer: _Quantizer, quantized: bytes, candidates: list[str], batch: Any,
    targets: dict[str, float], report: dict[str, Any],
) -> bytes | None:
    """The int8 model with the fewest most-sensitive nodes kept float that meets ``targets``.

    A node's sensitivity is the largest change of an ensemble probability on the check pictures
    when it alone is quantised. The smallest count ``k`` of the most sensitive nodes to keep float
    is found by bisection (assuming more float nodes never hurt; whatever is returned was measured
    to meet the targets).
    """
    model = quantizer.model
    reference = _probabilities(quantizer.float_bytes, batch)
    measured = _agreement(reference, quantized, batch)
    report["check"] = {"pictures": int(len(batch)), "targets": targets, "all_quantised": measured}
    if _meets(measured, targets):
        report["check"].update(measured, kept_float=[])
        return quantized
    skipped = {entry["node"] for entry in report["left_float"]}
    nodes = [n.name for n in model.graph.node if n.op_type in candidates and n.name not in skipped]
    sensitivity = {name: _agreement(reference, quantizer(candidates, only=[name])[0], batch)
                   ["max_probability_difference"] for name in nodes}
    ranked = sorted(nodes, key=lambda name: -sensitivity[name])
    best: tuple[bytes, dict[str, float], int] | None = None
    low, high = 1, len(ranked) - 1
    while low <= high:
        k = (low + high) // 2
        attempt = quantizer(candidates, exclude=ranked[:k])[0]
        result = _agreement(reference, attempt, batch)
        if _meets(result, targets):
            best, high = (attempt, result, k), k - 1
        else:
            low = k + 1
    if best is None:
        report["error"] = (
            f"no int8 model met the targets (grades agree on >= {targets['agreement']:.0%} of "
            f"{len(batch)} check pictures, probabilities move by <= {targets['max_difference']}) "
            f"short of keeping every node float; set export.int8_agreement / "
            f"export.int8_max_difference to accept less"
        )
        logger.warning("int8: %s; only the float model.onnx is written.", report["error"])
        return None
    attempt, result, k = best
    for name in ranked[:k]:
        op_type = next(n.op_type for n in model.graph.node if n.name == name)
        report["left_float"].append({
            "node": name, "op_type": op_type,
            "reason": f"kept float for accuracy: quantised alone it moves a probability by "
                      f"{sensitivity[name]:.4f} on the check pictures",
        })
    report["check"].update(result, kept_float=ranked[:k], quantisable_nodes=len(ranked))
    logger.info("int8: %d of %d nodes kept float for accuracy; grades agree on %.1f%% of %d check "
                "pictures (largest probability change %.4f).", k, len(ranked),
                100 * result["grade_agreement"], len(batch), result["max_probability_difference"])
    return attempt


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
