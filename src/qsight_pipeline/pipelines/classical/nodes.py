"""Nodes of the ``classical`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from qsight_pipeline.config import AugmentationParams, ModelParams, QuantumConfig, validate_block
from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.run_config import RunConfig

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
        raise ArtifactError(
            f"image_cache_{split} holds {len(images)} images but the manifest lists {len(grades)} "
            f"for the {split} split. Re-run `kedro run --pipeline ingestion`."
        )


def train_classical_model(
    image_cache_train: np.ndarray,
    image_cache_val: np.ndarray,
    manifest: pd.DataFrame,
    run_config: RunConfig,
    model: ModelParams,
    quantum: QuantumConfig,
    augmentation: AugmentationParams,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train the schedule's image stages on the decode-once image cache.

    Args:
        image_cache_train: uint8 (N, S, S, 3) training images in ``cache_index`` order.
        image_cache_val: the same for validation.
        manifest: the ingestion manifest (grades and split of every image).
        run_config: the run-wide settings and the parsed stage schedule.
        model, quantum, augmentation: the typed parameter blocks.

    Returns:
        ``phase1_classical_model`` (weights + model config) and ``classical_history`` (one summary
        per image stage, with its epoch records).
    """
    from qsight_pipeline import workflow
    from qsight_pipeline.data.torch_data import CachedImageDataset
    from qsight_pipeline.models.hybrid import ModelConfig, build_model
    from qsight_pipeline.training.checkpoints import fingerprint
    from qsight_pipeline.training.trainer import seed_everything

    run = run_config.settings
    settings = run_config.trainer_settings()
    config = ModelConfig.from_params(model, quantum, run.image_size)
    seed_everything(settings.seed)

    train_grades = split_grades(manifest, "train")
    val_grades = split_grades(manifest, "val")
    _check_cache(image_cache_train, train_grades, "train")
    _check_cache(image_cache_val, val_grades, "val")

    hybrid = build_model(config)
    augment = validate_block(AugmentationParams, augmentation, "augmentation").to_dict()
    train_set = CachedImageDataset(
        image_cache_train, train_grades, train=True, augment=augment, image_size=config.image_size
    )
    val_set = CachedImageDataset(
        image_cache_val, val_grades, train=False, augment=None, image_size=config.image_size
    )
    loader_options = {"seed": settings.seed, "num_workers": run.num_workers}
    train_loader = workflow.make_loader(train_set, run.batch_size, shuffle=True, **loader_options)
    val_loader = workflow.make_loader(val_set, run.batch_size, shuffle=False, **loader_options)
    data = manifest[["image_id", "grade", "split"]].to_dict("list")
    run_fingerprint = fingerprint(
        "classical", workflow.model_config_dict(config), run.batch_size, augment, data
    )
    history = workflow.train_image_stages(
        hybrid, run_config.schedule["classical"], train_loader, val_loader, settings,
        train_labels=train_grades, run_fingerprint=run_fingerprint,
    )
    return workflow.classical_checkpoint(hybrid, history), history
