"""Nodes of the ``predict`` pipeline: grade a folder of new fundus photographs."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from qsight_pipeline.config import PredictParams
from qsight_pipeline.data.layouts import IMAGE_SUFFIXES
from qsight_pipeline.errors import UserError
from qsight_pipeline.files.plain import path_text
from qsight_pipeline.inference.rows import prediction_row

logger = logging.getLogger(__name__)


class PredictInputError(UserError, FileNotFoundError):
    """``predict.input_dir`` is not a folder of fundus photographs."""


def list_images(input_dir: str | Path) -> list[Path]:
    """Every file under ``input_dir`` (hidden ones aside), sorted.

    Files that are not images stay in the list: they become rows with an ``error``. A folder with
    no image file at all is a wrong ``predict.input_dir`` and an error.
    """
    folder = Path(input_dir).expanduser()
    if not folder.is_dir():
        raise PredictInputError(
            f"predict.input_dir is {folder}, which is not a folder. Point it at a folder of fundus "
            "photographs: kedro run --pipeline predict --params predict.input_dir=/path/to/images"
        )
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
        found = sorted({p.suffix.lower() or "(no suffix)" for p in files})
        raise PredictInputError(
            f"predict.input_dir {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
            f"found files with suffixes: {found or 'none'}."
        )
    return files


# Characters a heatmap's file name cannot hold as they are (a file of the heatmaps folder has a
# plain name), and "%" itself so that the escaping can be read back: one input, one name.
_NAME_ESCAPES = {"%": "%25", "/": "%2F", "\\": "%5C"}
# Longer names (deep sub-folders) are cut and given a hash: most file systems stop at 255 bytes
# (24 + 32 kept characters of at most 4 bytes each and the hash stay under that).
_MAX_NAME_BYTES = 200


def heatmap_name(relative: str) -> str:
    """The heatmap of the photograph at ``relative`` (under ``predict.input_dir``) is
    ``heatmaps/<name>.png``: its path with the suffix kept, as one plain file name.

    ``twin.jpeg`` and ``twin.png`` get ``twin.jpeg.png`` and ``twin.png.png``; ``eyes/left.png``
    gets ``eyes%2Fleft.png.png``; a byte of a name that is not valid UTF-8 is written ``%FF``.
    Different paths give different names.
    """
    name = "".join(
        _NAME_ESCAPES.get(char)
        or (f"%{ord(char) - 0xDC00:02X}" if "\udc80" <= char <= "\udcff" else char)
        for char in relative
    )
    if len(name.encode()) > _MAX_NAME_BYTES:  # its start and end, a hash of the whole between
        digest = hashlib.sha256(os.fsencode(relative)).hexdigest()[:12]
        name = f"{name[:24]}~{digest}~{name[-32:]}"
    return name


def predict_grades(
    complete_checkpoint: dict[str, Any], predict: PredictParams
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Grade every file in ``predict.input_dir`` with the trained model and its saved calibration.

    Returns:
        ``predictions``: one row per file (see :func:`prediction_row`): grade, calibrated
        ensemble and per-head probabilities, gate weights, uncertainty, ``refer`` at the saved
        threshold, ``needs_review``, and ``error`` for a file that could not be read.
        ``prediction_heatmaps``: ``{name: overlay PIL image}`` (see :func:`heatmap_name`) when
        ``predict.heatmaps`` is true, else empty.
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.inference.loading import loaded_from_checkpoint
    from qsight_pipeline.inference.predict import overlay_image, predict_images

    loaded = loaded_from_checkpoint(
        complete_checkpoint, predict.device, gate_overrides=predict.gradability.overrides()
    )
    folder = Path(predict.input_dir).expanduser()
    paths = list_images(folder)
    predictions = predict_images(
        loaded, paths, batch_size=predict.batch_size, heatmaps=predict.heatmaps, progress=True
    )
    rows, overlays = [], {}
    for path, prediction in zip(paths, predictions, strict=True):
        name = heatmap_name(path.relative_to(folder).as_posix())
        rows.append(prediction_row(prediction, path, path.stem))
        if prediction.heatmap is not None:
            overlays[name] = Image.fromarray(overlay_image(path, prediction.heatmap))
        rows[-1]["heatmap"] = f"heatmaps/{name}.png" if name in overlays else ""
    failed = sum(1 for p in predictions if p.error)
    gated = sum(1 for p in predictions if p.decision == "refer for manual grading")
    logger.info(
        "Graded %d files from %s on %s (%d could not be read, %d referred for manual grading by "
        "the gate)%s",
        len(rows), path_text(folder), loaded.device, failed, gated,
        f"; {len(overlays)} heatmaps" if predict.heatmaps else "",
    )
    return pd.DataFrame(rows), overlays
