"""Load a trained model from its output folder, with the metadata it was trained with.

The preprocessing (image size, letterbox resize, interpolation, crop, normalisation: the one
pixel path's settings, ``data.preprocessing``), the temperatures and the referral operating point
all come from what training saved (``model_info.json`` and
``complete_checkpoint.pth``), never from the current parameters: a model is graded the way it
was trained, whatever ``conf/`` says today.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from qsight_pipeline.constants import ENSEMBLE, HEADS
from qsight_pipeline.data.preprocessing import Preprocessing, PreprocessingError, from_saved
from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.files.plain import json_default
from qsight_pipeline.files.safe_files import read_json_object, safe_torch_load
from qsight_pipeline.inference.gate import effective_gates
from qsight_pipeline.inference.graph import InferenceGraph
from qsight_pipeline.models.fusion_rules import saved_fusion
from qsight_pipeline.models.hybrid import HybridModel
from qsight_pipeline.training.artifacts import load_complete_checkpoint
from qsight_pipeline.training.devices import resolve_device

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "complete_checkpoint.pth"
MODEL_INFO_NAME = "model_info.json"
SUMMARY_NAME = "training_summary.json"
CALIBRATION_NAME = "calibration.json"


@dataclass
class LoadedModel:
    """A trained model ready to grade photographs.

    Attributes:
        model: the :class:`HybridModel` (eval mode, on ``device``).
        graph: the model with its calibration and its saved fusion of the heads
            (:class:`InferenceGraph`; ``graph.fusion`` is ``gated`` or ``mean``).
        model_info: ``model_info.json`` (with ``preprocessing`` and ``calibration``).
        training_summary: ``training_summary.json``.
        preprocessing: the one pixel path's settings as saved (``image_size``, ``resize``,
            ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``, ``std``, ``source``;
            ``data.preprocessing.Preprocessing``); a model saved before interpolation and crop
            were recorded reads as what it was trained with (bicubic letterbox, no crop).
        temperatures: per head and ``ensemble``.
        referral: ``threshold`` on P(grade >= 2), ``review_entropy_threshold`` and their
            validation figures.
        device: where the model runs.
        gates: the gradability bounds and the out-of-distribution threshold saved with the
            model (``model_info["gates"]``, with any overrides applied), or None for a model
            saved before the gate existed (then nothing is gated; a warning says so).
    """

    model: HybridModel
    graph: InferenceGraph
    model_info: dict[str, Any]
    training_summary: dict[str, Any]
    preprocessing: dict[str, Any]
    temperatures: dict[str, float]
    referral: dict[str, Any]
    device: torch.device
    active_heads: tuple[str, ...] = field(default=())
    gates: dict[str, Any] | None = None


def preprocessing_metadata(
    source: Preprocessing | Mapping[str, Any] | int, image_size: int | None = None
) -> dict[str, Any]:
    """What prediction must do to a photograph to feed the model (saved in ``model_info.json``):
    a :class:`Preprocessing` or its dict (``model.config.preprocessing``); an ``int`` is the
    ImageNet letterbox of before at that side.

    Raises:
        PreprocessingError: ``image_size`` is given and is not the preprocessing's.
    """
    settings = from_saved(source)
    if image_size is not None and int(image_size) != settings.image_size:
        raise PreprocessingError(
            f"The model's image_size {image_size} is not its preprocessing's "
            f"{settings.image_size}. Rebuild the model with `kedro run`."
        )
    return settings.to_dict()


def default_operating_point() -> dict[str, Any]:
    """For a model trained before calibration existed: identity temperatures, threshold 0.5."""
    return {
        "temperatures": {**{head: 1.0 for head in HEADS}, ENSEMBLE: 1.0},
        "referral": {"threshold": 0.5, "review_entropy_threshold": None, "validation": None},
    }


_REBUILD_FROM_PYTHON = (
    "`kedro run --pipelines ensemble` (or `save_model` again for a model trained from Python)"
)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return read_json_object(path, rebuild=_REBUILD_FROM_PYTHON)


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """``complete_checkpoint.pth`` loaded safely (tensors and plain data only).

    Raises:
        ArtifactError: the file is missing; :class:`CorruptArtifactError` when it is damaged,
            crafted (holds objects other than tensors and plain data) or not a QSight checkpoint.
    """
    if not path.is_file():
        raise ArtifactError(
            f"{path} does not exist. Train a model first (`kedro run`) and pass its output folder "
            "(the `run.output_dir` parameter, data/06_models/trained_model by default)."
        )
    return safe_torch_load(
        path, required_keys=("model_config", "model_state", "model_info"),
        rebuild=_REBUILD_FROM_PYTHON,
    )


def loaded_from_checkpoint(
    checkpoint: dict[str, Any],
    device: str | torch.device = "cpu",
    model_info: dict[str, Any] | None = None,
    training_summary: dict[str, Any] | None = None,
    gate_overrides: dict[str, Any] | None = None,
) -> LoadedModel:
    """A :class:`LoadedModel` from a ``complete_checkpoint`` dict (as the catalog loads it).

    ``gate_overrides``: ``{"<measure>_min" | "<measure>_max" | "ood_threshold": value}`` replacing
    bounds of the saved gate (``predict.gradability``); None values keep the saved ones.
    """
    info = dict(model_info or checkpoint.get("model_info") or {})
    model = load_complete_checkpoint(checkpoint)
    target = resolve_device(device)
    preprocessing = _saved_preprocessing(info, model)
    operating_point = info.get("calibration")
    if not operating_point:
        logger.warning(
            "This model has no saved calibration (trained before it existed): probabilities are "
            "uncalibrated and the referral threshold is 0.5. Re-run `kedro run --pipelines "
            "ensemble` to fit them."
        )
        operating_point = default_operating_point()
    gates = effective_gates(info.get("gates"), gate_overrides)
    if gates is None:
        logger.warning(
            "This model has no gradability / out-of-distribution gate (it was saved before the "
            "gate existed): photographs are graded without checking that they are gradable "
            "fundus photographs like the training ones (gradable and in_distribution are left "
            "empty). Re-run `kedro run --pipelines ensemble` to fit the gate."
        )
    # A model saved before the fusion was chosen is graded by its gate, as it was trained.
    graph = InferenceGraph(model, operating_point["temperatures"], saved_fusion(info)).to(target).eval()
    return LoadedModel(
        model=model,
        graph=graph,
        model_info=info,
        training_summary=dict(training_summary or checkpoint.get("training_summary") or {}),
        preprocessing=preprocessing,
        temperatures=dict(operating_point["temperatures"]),
        referral=dict(operating_point["referral"]),
        device=target,
        active_heads=tuple(h for h, on in zip(HEADS, graph.active, strict=True) if on),
        gates=gates,
    )


def _saved_preprocessing(info: Mapping[str, Any], model: HybridModel) -> dict[str, Any]:
    """The preprocessing ``model_info`` saved (the model config's when it has none), checked
    against the model config's: the model is fed the way it was trained."""
    saved = preprocessing_metadata(info.get("preprocessing") or model.config.preprocessing)
    trained = preprocessing_metadata(model.config.preprocessing)
    if {k: v for k, v in saved.items() if k != "source"} != {k: v for k, v in trained.items() if k != "source"}:
        raise PreprocessingError(
            f"model_info's preprocessing {saved} is not the one the model was trained with "
            f"({trained}). {_REBUILD_FROM_PYTHON} rebuilds the model's files."
        )
    return saved


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=json_default)


def _first_difference(saved: Any, embedded: Any, where: str = "") -> str:
    """The first key path at which two JSON values differ (for the message)."""
    if isinstance(saved, dict) and isinstance(embedded, dict):
        for key in sorted(set(saved) | set(embedded), key=str):
            if key not in saved or key not in embedded:
                return f"{where}{key}"
            if _canonical(saved[key]) != _canonical(embedded[key]):
                return _first_difference(saved[key], embedded[key], f"{where}{key}.")
    if isinstance(saved, list) and isinstance(embedded, list) and len(saved) == len(embedded):
        for index, (a, b) in enumerate(zip(saved, embedded, strict=True)):
            if _canonical(a) != _canonical(b):
                return _first_difference(a, b, f"{where}{index}.")
    return where.rstrip(".") or "(the whole file)"


class ForeignFileError(ArtifactError):
    """A file beside a checkpoint does not belong to it (edited, or from another run)."""


def check_belongs(saved: Any, embedded: Any, path: Path, checkpoint_path: Path) -> None:
    """``saved`` (a JSON file beside the checkpoint) must equal the copy the checkpoint holds."""
    if saved is None or embedded is None:
        return
    if _canonical(saved) != _canonical(embedded):
        raise ForeignFileError(
            f"{path} does not belong to {checkpoint_path}: it differs from the copy the "
            f"checkpoint holds (first at `{_first_difference(saved, embedded)}`), so it was "
            "edited or comes from another run. The checkpoint is what the model is graded with; "
            f"delete {path.name} (or copy the whole folder of one run) and try again."
        )


def _calibration_held(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """What ``calibration.json`` holds, from the checkpoint: the operating point inference applies
    (``model_info["calibration"]``) and, as ``report``, the figures ``training_summary`` keeps
    beside it. None for a model saved without a calibration."""
    applied = (checkpoint.get("model_info") or {}).get("calibration")
    if not applied:
        return None
    summarised = (checkpoint.get("training_summary") or {}).get("calibration") or {}
    report = {key: value for key, value in summarised.items() if key not in applied}
    return {**applied, "report": report} if report else dict(applied)


def check_saved_copies(checkpoint: dict[str, Any], checkpoint_path: Path) -> None:
    """The readable copies beside ``checkpoint_path`` must equal what the checkpoint holds.

    ``model_info.json``, ``training_summary.json`` and ``calibration.json`` (written by the
    ensemble pipeline: the operating point of ``model_info`` and the figures of the summary). A
    missing copy is fine; one that differs raises :class:`ForeignFileError` naming it.
    ``load_model`` and every pipeline that loads ``complete_checkpoint`` call this, so they refuse
    the same files.
    """
    folder = checkpoint_path.parent
    for name, held in (
        (MODEL_INFO_NAME, checkpoint.get("model_info")),
        (SUMMARY_NAME, checkpoint.get("training_summary")),
        (CALIBRATION_NAME, _calibration_held(checkpoint)),
    ):
        check_belongs(_read_json(folder / name), held, folder / name, checkpoint_path)


def load_model(
    output_dir: str | Path,
    device: str | torch.device = "cpu",
    gate_overrides: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load the model a training run wrote to ``output_dir``.

    Args:
        output_dir: the run's folder with ``complete_checkpoint.pth`` (and ``model_info.json``,
            ``training_summary.json``, which are read when present).
        device: ``cpu``, ``cuda``, ``cuda:<index>`` or ``auto``.
        gate_overrides: bounds replacing the saved gate's (see :func:`loaded_from_checkpoint`).

    Returns:
        A :class:`LoadedModel`: the model, its metadata (``model_info``) and ``training_summary``.
    """
    folder = Path(output_dir).expanduser()
    checkpoint_path = folder / CHECKPOINT_NAME
    checkpoint = load_checkpoint_file(checkpoint_path)
    # model_info.json, training_summary.json and calibration.json are readable copies of what the
    # checkpoint holds; the checkpoint's own copy is what grading uses (as the pipelines do), and
    # a copy that differs from it is refused rather than trusted.
    check_saved_copies(checkpoint, checkpoint_path)
    return loaded_from_checkpoint(
        checkpoint,
        device,
        model_info=checkpoint.get("model_info") or _read_json(folder / MODEL_INFO_NAME),
        training_summary=checkpoint.get("training_summary") or _read_json(folder / SUMMARY_NAME),
        gate_overrides=gate_overrides,
    )
