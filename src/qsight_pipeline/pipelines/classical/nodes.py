"""Nodes of the ``classical`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from qsight_pipeline import lineage, run_config, workflow
from qsight_pipeline.data.torch_data import CachedImageDataset
from qsight_pipeline.models.hybrid import build_model
from qsight_pipeline.training.trainer import seed_everything

logger = logging.getLogger(__name__)


def split_grades(manifest: pd.DataFrame, split: str) -> np.ndarray:
    """Grades of one split in the order of its image cache (``cache_index``)."""
    rows = manifest[manifest["split"] == split].sort_values("cache_index")
    return rows["grade"].to_numpy(dtype=np.int64)


def split_image_ids(manifest: pd.DataFrame, split: str) -> list[str]:
    rows = manifest[manifest["split"] == split].sort_values("cache_index")
    return rows["image_id"].astype(str).tolist()


def _check_cache(images: np.ndarray, grades: np.ndarray, split: str) -> None:
    if len(images) != len(grades):
        raise ValueError(
            f"image_cache_{split} holds {len(images)} images but the manifest lists {len(grades)} "
            f"for the {split} split. Re-run `kedro run --pipeline ingestion`."
        )


def train_classical_model(
    image_cache_train: np.ndarray,
    image_cache_val: np.ndarray,
    manifest: pd.DataFrame,
    parameters: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train the schedule's image stages on the decode-once image cache.

    Args:
        image_cache_train: uint8 (N, S, S, 3) training images in ``cache_index`` order.
        image_cache_val: the same for validation.
        manifest: the ingestion manifest (grades and split of every image).
        parameters: all project parameters (model, quantum, schedule and run-wide settings).

    Returns:
        ``phase1_classical_model`` (weights + model config) and ``classical_history`` (one summary
        per image stage, with its epoch records).
    """
    stages = run_config.schedule(parameters)["classical"]
    settings = run_config.trainer_settings(parameters)
    config = run_config.model_config(parameters)
    batch_size = run_config.batch_size(parameters)
    seed_everything(settings.seed)

    ingestion = lineage.check_image_caches(
        manifest, {"train": image_cache_train, "val": image_cache_val}
    )
    train_grades = split_grades(manifest, "train")
    val_grades = split_grades(manifest, "val")
    _check_cache(image_cache_train, train_grades, "train")
    _check_cache(image_cache_val, val_grades, "val")

    model = build_model(config)
    augment = parameters.get("augmentation")
    train_set = CachedImageDataset(
        image_cache_train, train_grades, train=True, augment=augment, image_size=config.image_size
    )
    val_set = CachedImageDataset(
        image_cache_val, val_grades, train=False, augment=None, image_size=config.image_size
    )
    workers = int(parameters.get("num_workers", 0))
    train_loader = workflow.make_loader(
        train_set, batch_size, shuffle=True, seed=settings.seed, num_workers=workers
    )
    val_loader = workflow.make_loader(
        val_set, batch_size, shuffle=False, seed=settings.seed, num_workers=workers
    )
    fingerprint = run_config.fingerprint(
        "classical", workflow.model_config_dict(config), batch_size, augment, manifest[["image_id", "grade", "split"]].to_dict("list"),
    )
    history = workflow.train_image_stages(
        model, stages, train_loader, val_loader, settings,
        train_labels=train_grades, run_fingerprint=fingerprint,
    )
    checkpoint = workflow.classical_checkpoint(model, history)
    return lineage.stamp_classical(checkpoint, ingestion), history
