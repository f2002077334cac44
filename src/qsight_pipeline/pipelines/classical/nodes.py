"""Nodes of the ``classical`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from qsight_pipeline.config import (
    AugmentationParams,
    DistributedParams,
    ModelParams,
    QuantumConfig,
)
from qsight_pipeline.data.splits import split_grades
from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.files import lineage
from qsight_pipeline.kedro_app.run_config import RunConfig
from qsight_pipeline.training.distributed_plan import worker_plan

logger = logging.getLogger(__name__)


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
    distributed: DistributedParams | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train the schedule's image stages on the decode-once image cache.

    Args:
        image_cache_train: uint8 (N, S, S, 3) training images in ``cache_index`` order.
        image_cache_val: the same for validation.
        manifest: the ingestion manifest (grades and split of every image).
        run_config: the run-wide settings and the parsed stage schedule.
        model, quantum, augmentation: the typed parameter blocks.
        distributed: with ``nproc_per_node * nnodes > 1`` the stages run in DDP workers that
            this node launches (README, "Distributed training").

    Returns:
        ``phase1_classical_model`` (weights + model config) and ``classical_history`` (one summary
        per image stage, with its epoch records).
    """
    from qsight_pipeline.data.device_augment import with_device_augmentation
    from qsight_pipeline.data.loaders import loader_options as options_for_loaders
    from qsight_pipeline.data.loaders import make_loader
    from qsight_pipeline.data.torch_data import CachedImageDataset
    from qsight_pipeline.files import artifacts
    from qsight_pipeline.models.hybrid import ModelConfig, build_model
    from qsight_pipeline.training import workflow
    from qsight_pipeline.training.checkpoints import fingerprint
    from qsight_pipeline.training.ddp_jobs import ClassicalJob, train_classical_ddp
    from qsight_pipeline.training.devices import resolve_device
    from qsight_pipeline.training.trainer import seed_everything

    run = run_config.settings
    augment = augmentation.to_dict()
    settings = with_device_augmentation(run_config.trainer_settings(), augment)
    config = ModelConfig.from_params(model, quantum, run.image_size)
    seed_everything(settings.seed)

    ingestion = lineage.check_image_caches(
        manifest, {"train": image_cache_train, "val": image_cache_val}
    )
    train_grades = split_grades(manifest, "train")
    val_grades = split_grades(manifest, "val")
    _check_cache(image_cache_train, train_grades, "train")
    _check_cache(image_cache_val, val_grades, "val")
    data = manifest[["image_id", "grade", "split"]].to_dict("list")
    run_fingerprint = fingerprint(
        "classical", artifacts.model_config_dict(config), run.batch_size, augment, data
    )
    plan = worker_plan(distributed, settings)
    if plan.enabled:
        job = ClassicalJob(
            config=config, stages=run_config.schedule["classical"], settings=settings,
            batch_size=run.batch_size, augment=augment, num_workers=run.num_workers,
            train_grades=train_grades, val_grades=val_grades, fingerprint=run_fingerprint,
        )
        result = _only_machine_zero_returns(
            train_classical_ddp(plan, job, image_cache_train, image_cache_val), plan
        )
        return lineage.stamp_classical(result[0], ingestion), result[1]

    hybrid = build_model(config)
    train_set = CachedImageDataset(
        image_cache_train, train_grades, train=True, augment=augment, image_size=config.image_size
    )
    val_set = CachedImageDataset(
        image_cache_val, val_grades, train=False, augment=None, image_size=config.image_size
    )
    loader_options = {
        "seed": settings.seed,
        **options_for_loaders(run.num_workers, resolve_device(settings.device)),
    }
    train_loader = make_loader(train_set, run.batch_size, shuffle=True, **loader_options)
    val_loader = make_loader(val_set, run.batch_size, shuffle=False, **loader_options)
    history = workflow.train_image_stages(
        hybrid, run_config.schedule["classical"], train_loader, val_loader, settings,
        train_labels=train_grades, run_fingerprint=run_fingerprint,
    )
    checkpoint = artifacts.classical_checkpoint(hybrid, history)
    return lineage.stamp_classical(checkpoint, ingestion), history


def _only_machine_zero_returns(result: Any, plan: Any) -> Any:
    """Machine 0 returns the node's outputs; the other machines' part ends here."""
    if result is not None:
        return result
    logger.info(
        "Machine %d of %d finished its DDP workers; machine 0 writes the artifacts. Exiting.",
        plan.node_rank, plan.nnodes,
    )
    # Kedro has no "no output" for a node: ending the process is the honest way out on a
    # machine that must not write (README, "Distributed training").
    raise SystemExit(0)
