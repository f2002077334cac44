"""Grade photographs: ``predict_image`` for one, ``predict_images`` for many (batched).

A file that cannot be read gives a :class:`Prediction` with ``error`` set and nothing else, and
the batch goes on. Every photograph passes the gate first (:mod:`qsight_pipeline.inference.gate`):
``gradable`` (with ``gradability_reasons``) from the decoded picture, ``in_distribution`` from the
features the gate scores (the encoder's pooled features; the compressed features for a gate saved
before the space was recorded). The rule:

- gated (``gradable`` or ``in_distribution`` is False): ``decision`` is "refer for manual
  grading", ``refer`` and ``needs_review`` are True; the model's grade and probabilities stay in
  the row for the human grader but are not a grading;
- otherwise ``refer`` is ``referable_probability >= threshold`` at the threshold saved with the
  model, ``needs_review`` is ``entropy > review_entropy_threshold`` (both chosen on validation),
  and ``decision`` is "refer" or "no referral".
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from qsight_pipeline.constants import GRADE_NAMES, HEADS
from qsight_pipeline.data.image_cache import (
    ImageArrayError,
    ImageDecodeError,
    check_image_array,
    picture,
)
from qsight_pipeline.data.preprocessing import Preprocessing
from qsight_pipeline.data.torch_data import normalise
from qsight_pipeline.inference import gate as gating
from qsight_pipeline.inference.graph import OUTPUT_NAMES
from qsight_pipeline.inference.heatmaps import grad_cam_maps, in_letterbox_frame, overlay
from qsight_pipeline.inference.loading import LoadedModel
from qsight_pipeline.training.latency import LatencyTracker, track_latency

logger = logging.getLogger(__name__)

ImageInput = str | os.PathLike | np.ndarray
# Overlays are drawn at least this large, whatever the model's input size.
OVERLAY_MIN_SIZE = 256


@dataclass
class Prediction:
    """The grading of one photograph (``error`` set and the rest empty when it could not be read).

    Probabilities are calibrated (temperature scaling). ``head_probabilities`` and
    ``gate_weights`` are keyed by head name (``head_a``, ``head_b``, ``quantum_head``);
    ``latency_ms`` by component (``preprocess``, ``encoder``, ``compression``, each head,
    ``ensemble``, ``calibration``, ``total``), per image.

    The gate: ``gradable`` and ``gradability_reasons`` (image quality, from ``quality``),
    ``in_distribution`` (``ood_distance`` against the saved threshold), ``gate_score`` (> 0 when
    the image fails either) and ``decision``: "refer for manual grading" for a gated image,
    else "refer" or "no referral". All gate fields are None for a model saved without a gate.
    """

    source: str
    grade: int | None = None
    grade_name: str | None = None
    ensemble_probabilities: list[float] | None = None
    head_probabilities: dict[str, list[float]] = field(default_factory=dict)
    gate_weights: dict[str, float] = field(default_factory=dict)
    entropy: float | None = None
    disagreement: float | None = None
    referable_probability: float | None = None
    refer: bool | None = None
    needs_review: bool | None = None
    gradable: bool | None = None
    gradability_reasons: list[str] = field(default_factory=list)
    in_distribution: bool | None = None
    ood_distance: float | None = None
    gate_score: float | None = None
    decision: str | None = None
    quality: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    heatmap: np.ndarray | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the heatmap left out)."""
        return {k: v for k, v in asdict(self).items() if k != "heatmap"}


def decode(image: ImageInput, preprocessing: Preprocessing | dict[str, Any]) -> np.ndarray:
    """A file path or an array -> the uint8 ``(S, S, 3)`` picture of the one pixel path
    (:func:`~qsight_pipeline.data.image_cache.picture`, as ingestion decodes) with the model's
    ``preprocessing`` (``loaded.preprocessing``; a bare size is refused: it would drop the
    model's interpolation and crop).

    Raises:
        ImageDecodeError: a file that is empty, missing, not an image, truncated or corrupt.
        ImageArrayError: an array whose dtype, shape or range is not an image's
            (:func:`~qsight_pipeline.data.image_cache.image_from_array`).
    """
    if isinstance(preprocessing, int):
        raise TypeError("decode() takes the model's preprocessing (loaded.preprocessing), not a size")
    if isinstance(image, np.ndarray):
        return picture(image, preprocessing)
    path = Path(image)
    if path.is_file() and path.stat().st_size == 0:
        raise ImageDecodeError(f"{path}: empty file (0 bytes)")
    return picture(path, preprocessing)


def _check_arrays(images: Sequence[ImageInput]) -> None:
    """Refuse a bad array before anything is graded: it is the caller's bug, not a bad file."""
    for index, image in enumerate(images):
        if isinstance(image, np.ndarray):
            try:
                check_image_array(image)
            except ImageArrayError as error:
                where = "image" if len(images) == 1 else f"images[{index}]"
                raise ImageArrayError(f"{where}: {error}") from None


def _source_name(image: ImageInput, index: int) -> str:
    return f"<array {index}>" if isinstance(image, np.ndarray) else str(image)


def _run_graph(loaded: LoadedModel, batch: torch.Tensor) -> tuple[list[np.ndarray], dict[str, float]]:
    """The calibrated outputs of one batch and the per-image milliseconds of each component."""
    tracker = LatencyTracker()
    batch = batch.to(loaded.device)
    with track_latency(loaded.model, tracker), torch.no_grad():  # timed from outside the model
        start = time.perf_counter()
        outputs = loaded.graph(batch)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize(loaded.device)
        total = (time.perf_counter() - start) * 1000.0
    parts = {component: sum(values) for component, values in tracker.samples_ms.items()}
    parts["calibration"] = max(total - sum(parts.values()), 0.0)
    count = batch.shape[0]
    return [o.detach().float().cpu().numpy() for o in outputs], {k: v / count for k, v in parts.items()}


def _prediction(
    loaded: LoadedModel, source: str, outputs: list[np.ndarray], i: int,
    quality: dict[str, float] | None = None,
) -> Prediction:
    named = dict(zip(OUTPUT_NAMES, (o[i] for o in outputs), strict=True))
    ensemble, head_probs, weights, entropy, disagreement, referable = (
        named[name] for name in OUTPUT_NAMES[:6]
    )
    features = gating.space_features(named, loaded.gates)
    grade = int(np.argmax(ensemble))
    threshold = loaded.referral.get("threshold", 0.5)
    review = loaded.referral.get("review_entropy_threshold")
    prediction = Prediction(
        source=source,
        grade=grade,
        grade_name=GRADE_NAMES[grade],
        ensemble_probabilities=[float(p) for p in ensemble],
        head_probabilities={
            head: [float(p) for p in head_probs[j]]
            for j, head in enumerate(HEADS) if head in loaded.active_heads
        },
        gate_weights={head: float(weights[j]) for j, head in enumerate(HEADS)},
        entropy=float(entropy),
        disagreement=float(disagreement),
        referable_probability=float(referable),
        refer=bool(referable >= threshold),
        needs_review=bool(review is not None and entropy > review),
    )
    apply_gate(prediction, loaded.gates, quality or {}, features, named["classical_logits"])
    return prediction


def apply_gate(
    prediction: Prediction, gates: dict[str, Any] | None, quality: dict[str, float],
    features: np.ndarray | None, logits: np.ndarray | None = None,
) -> None:
    """Set the gate fields and the decision of a graded ``prediction`` (the rule of this module).

    ``features``: the row of the graph's output the gate scores; ``logits``: its
    ``classical_logits`` row, which the ``energy`` and ``vim`` detectors read.
    """
    prediction.quality = dict(quality)
    if gates is not None:
        distance = None
        if gates.get("ood") is not None and features is not None:
            rows = None if logits is None else np.asarray(logits)[None, :]
            distance = float(gating.ood_score(np.asarray(features)[None, :], gates["ood"], rows)[0])
        verdict = gating.gate_verdict(quality, distance, gates)
        prediction.gradable = verdict["gradable"]
        prediction.gradability_reasons = verdict["gradability_reasons"]
        prediction.in_distribution = verdict["in_distribution"]
        prediction.ood_distance = distance
        prediction.gate_score = verdict["gate_score"]
    if prediction.gradable is False or prediction.in_distribution is False:
        prediction.refer = True
        prediction.needs_review = True
        prediction.decision = gating.MANUAL_GRADING
    else:
        prediction.decision = "refer" if prediction.refer else "no referral"


def gate_reasons(prediction: Prediction) -> list[str]:
    """Why a prediction was gated, in words (empty when it passed or there is no gate)."""
    reasons = list(prediction.gradability_reasons)
    if prediction.in_distribution is False:
        reasons.append(gating.OOD_REASON)
    return reasons


def _decode_all(
    images: Sequence[ImageInput], preprocessing: dict[str, Any], start: int, measure: bool = True
) -> tuple[list[tuple[int, np.ndarray, dict[str, float]]], dict[int, str], float]:
    decoded, errors = [], {}
    began = time.perf_counter()
    for offset, image in enumerate(images):
        try:
            array = decode(image, preprocessing)
        except (ImageDecodeError, OSError) as error:
            errors[start + offset] = str(error)
            continue
        # Measured on the photograph itself at the analysis size: a second decode, so the
        # model's pixel path is left alone.
        quality = gating.photograph_measures(image) if measure else {}
        decoded.append((start + offset, array, quality))
    per_image = (time.perf_counter() - began) * 1000.0 / max(len(images), 1)
    return decoded, errors, per_image


def predict_images(
    loaded: LoadedModel,
    images: Sequence[ImageInput],
    *,
    batch_size: int = 32,
    heatmaps: bool = False,
    progress: bool | None = None,
) -> list[Prediction]:
    """Grade many photographs (paths or arrays), ``batch_size`` at a time, in input order.

    Args:
        loaded: from :func:`load_model`.
        images: file paths or arrays. Arrays are decoded exactly as the file they came from:
            RGB order (convert OpenCV's BGR with ``array[..., ::-1]``), ``(H, W)``,
            ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha composited onto black), dtype
            ``uint8``, ``uint16`` (scaled like a 16-bit PNG) or float in ``[0, 1]``.
        heatmaps: also compute a Grad-CAM map per image (``Prediction.heatmap``, ``(S, S)``,
            over the whole letterboxed photograph as :func:`overlay_image` draws it: the border
            the model's centre crop left out is 0).
        progress: show a progress bar (default: when there are more than ``batch_size`` images).

    Returns:
        One :class:`Prediction` per input; unreadable files carry ``error``.

    Raises:
        ImageArrayError: an array of another dtype or shape, or floats outside ``[0, 1]``
            (checked before anything is graded).
    """
    images = list(images)
    _check_arrays(images)
    results: list[Prediction | None] = [None] * len(images)
    show = progress if progress is not None else len(images) > batch_size
    with tqdm(total=len(images), desc="predict", unit="image", disable=not show) as bar:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            decoded, errors, decode_ms = _decode_all(
                chunk, loaded.preprocessing, start, loaded.gates is not None
            )
            for index, message in errors.items():
                results[index] = Prediction(source=_source_name(images[index], index), error=message)
            if decoded:
                _grade_batch(loaded, images, decoded, decode_ms, heatmaps, results)
            bar.update(len(chunk))
    return [r for r in results if r is not None]


def _grade_batch(
    loaded: LoadedModel,
    images: Sequence[ImageInput],
    decoded: list[tuple[int, np.ndarray, dict[str, float]]],
    decode_ms: float,
    heatmaps: bool,
    results: list[Prediction | None],
) -> None:
    began = time.perf_counter()
    batch = normalise(np.stack([array for _, array, _ in decoded]), loaded.preprocessing)
    preprocess_ms = decode_ms + (time.perf_counter() - began) * 1000.0 / len(decoded)
    outputs, latency = _run_graph(loaded, batch)
    latency = {"preprocess": preprocess_ms, **latency}
    latency["total"] = sum(latency.values())
    maps = None
    if heatmaps:
        grades = [int(np.argmax(p)) for p in outputs[0]]
        maps = in_letterbox_frame(
            grad_cam_maps(loaded.graph, batch.to(loaded.device), grades), loaded.preprocessing
        )
    for row, (index, _, quality) in enumerate(decoded):
        prediction = _prediction(loaded, _source_name(images[index], index), outputs, row, quality)
        prediction.latency_ms = dict(latency)
        prediction.heatmap = None if maps is None else maps[row]
        results[index] = prediction


def predict_image(loaded: LoadedModel, image: ImageInput, *, heatmap: bool = False) -> Prediction:
    """Grade one photograph; see :class:`Prediction`.

    ``image`` is a file path or an array decoded exactly as that file would be: RGB channel
    order (an OpenCV ``imread`` array is BGR: pass ``array[..., ::-1]``), shape ``(H, W)``,
    ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha composited onto black), dtype
    ``uint8``, ``uint16`` (0-65535, scaled like a 16-bit PNG) or float in ``[0, 1]``. Any other
    array is an :class:`~qsight_pipeline.data.image_cache.ImageArrayError`.
    """
    return predict_images(loaded, [image], batch_size=1, heatmaps=heatmap, progress=False)[0]


def overlay_image(image: ImageInput, heatmap: np.ndarray, size: int | None = None) -> np.ndarray:
    """The photograph letterboxed to ``size`` (default ``max(map size, 256)``) under its heatmap."""
    size = size or max(int(heatmap.shape[0]), OVERLAY_MIN_SIZE)
    if isinstance(image, np.ndarray):
        return overlay(picture(image, size), heatmap)
    return overlay(picture(Path(image), size), heatmap)
