"""Nodes of the ``predict`` pipeline: grade a folder of new fundus photographs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qsight_pipeline.config import PredictParams, validate_block
from qsight_pipeline.constants import GRADE_NAMES, HEADS
from qsight_pipeline.data.image_cache import load_image
from qsight_pipeline.data.layouts import IMAGE_SUFFIXES
from qsight_pipeline.errors import UserError

logger = logging.getLogger(__name__)


class PredictInputError(UserError, FileNotFoundError):
    """``predict.input_dir`` is not a folder of fundus photographs."""


def list_images(input_dir: str | Path) -> list[Path]:
    """Every image file (any case of .jpeg/.jpg/.png) under ``input_dir``, sorted."""
    folder = Path(input_dir).expanduser()
    if not folder.is_dir():
        raise PredictInputError(
            f"predict.input_dir is {folder}, which is not a folder. Point it at a folder of fundus "
            "photographs: kedro run --pipeline predict --params predict.input_dir=/path/to/images"
        )
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        found = sorted({p.suffix.lower() or "(no suffix)" for p in folder.rglob("*") if p.is_file()})
        raise PredictInputError(
            f"predict.input_dir {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
            f"found files with suffixes: {found or 'none'}."
        )
    return images


def predict_grades(complete_checkpoint: dict[str, Any], predict: PredictParams) -> pd.DataFrame:
    """Grade every image in ``predict.input_dir`` with the trained hybrid model.

    Returns:
        One row per image: ``image``, ``path``, ``predicted_grade``, ``grade_name``,
        ``prob_grade_0..4``, ``referable_probability`` (grade >= 2), ``entropy``,
        ``disagreement`` and the ensemble's weight on each head.
    """
    # torch and the model code load here, not at import: `kedro --help` must stay quick.
    import torch

    from qsight_pipeline import workflow
    from qsight_pipeline.data.torch_data import build_image_transform

    predict = validate_block(PredictParams, predict, "predict")
    paths = list_images(predict.input_dir)
    batch_size = predict.batch_size
    model = workflow.load_complete_checkpoint(complete_checkpoint)
    size = model.config.image_size
    transform = build_image_transform(size, train=False, augment=None)
    active_mask = (1, 1, 1 if model.quantum_head is not None else 0)
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            images = torch.stack(
                [transform(load_image(p, size)) for p in chunk]
            )
            out = model(images, active_mask=active_mask)
            probs = out["fused_probs"].float().numpy()
            weights = out["head_weights"].float().numpy()
            for i, path in enumerate(chunk):
                grade = int(np.argmax(probs[i]))
                rows.append(
                    {
                        "image": path.stem,
                        "path": str(path),
                        "predicted_grade": grade,
                        "grade_name": GRADE_NAMES[grade],
                        **{f"prob_grade_{g}": float(probs[i, g]) for g in range(len(GRADE_NAMES))},
                        "referable_probability": float(probs[i, 2:].sum()),
                        "entropy": float(out["entropy"][i]),
                        "disagreement": float(out["disagreement"][i]),
                        **{f"weight_{h}": float(weights[i, j]) for j, h in enumerate(HEADS)},
                    }
                )
    logger.info("Graded %d images from %s", len(rows), predict.input_dir)
    return pd.DataFrame(rows)
