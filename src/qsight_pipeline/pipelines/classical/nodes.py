"""Nodes of the ``classical`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from qsight_pipeline.config import (
    AugmentationParams,
    ModelParams,
    QuantumConfig,
)
from qsight_pipeline.data.preprocessing import check_pictures
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
            f"for the {split} split. Re-run `kedro run --pipelines ingestion`."
        )


def classical_model_config(run_config: RunConfig, model: ModelParams, quantum: QuantumConfig) -> Any:
    """``model_config``: the hybrid model to build, from the ``model`` and ``quantum`` blocks and
    the run-wide ``image_size`` (``models.hybrid.ModelConfig``, with the encoder's preprocessing)."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.models.hybrid import ModelConfig

    return ModelConfig.from_params(model, quantum, run_config.settings.image_size)


def train_classical_model(
    image_cache_train: np.ndarray,
    image_cache_val: np.ndarray,
    manifest: pd.DataFrame,
    run_config: RunConfig,
    model_config: Any,
    augmentation: AugmentationParams,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train the schedule's image stages on the decode-once image cache.

    Args:
        image_cache_train, image_cache_val: uint8 (N, S, S, 3) images in ``cache_index`` order.
        manifest: the ingestion manifest (grades and split of every image).
        run_config: the ``run`` block, the schedule and ``distributed`` (more than one process: DDP).
        model_config: the model to build (:func:`classical_model_config`).
        augmentation: the typed ``augmentation`` block.

    Returns:
        ``phase1_classical_model`` (weights + model config) and ``classical_history`` (one summary
        per image stage, with its epoch records).
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.data.device_augment import with_device_augmentation
    from qsight_pipeline.files import artifacts
    from qsight_pipeline.models.hybrid import build_model
    from qsight_pipeline.training import workflow
    from qsight_pipeline.training.checkpoints import fingerprint
    from qsight_pipeline.training.ddp_jobs import ClassicalJob, train_classical_ddp
    from qsight_pipeline.training.trainer import seed_everything

    augment = augmentation.to_dict()  # for the fingerprint; the typed block travels on
    settings = with_device_augmentation(run_config.trainer_settings(), augmentation,
                                        model_config.preprocessing)
    seed_everything(settings.seed)
    ingestion, grades = _checked_grades(manifest, image_cache_train, image_cache_val, model_config)
    data = manifest[["image_id", "grade", "split"]].to_dict("list")
    run_fingerprint = fingerprint("classical", artifacts.model_config_dict(model_config),
                                  settings.batch_size, augment, data)
    plan = worker_plan(run_config.distributed, settings)
    if plan.enabled:
        job = ClassicalJob(
            config=model_config, stages=run_config.schedule["classical"], settings=settings,
            batch_size=settings.batch_size, augment=augmentation, num_workers=settings.num_workers,
            train_grades=grades["train"], val_grades=grades["val"], fingerprint=run_fingerprint,
        )
        checkpoint, history = _only_machine_zero_returns(
            train_classical_ddp(plan, job, image_cache_train, image_cache_val), plan
        )
        return lineage.stamp_classical(checkpoint, ingestion), history

    hybrid = build_model(model_config)
    train_loader, val_loader = _image_loaders(
        (image_cache_train, image_cache_val), grades, augmentation, settings, model_config
    )
    history = workflow.train_image_stages(
        hybrid, run_config.schedule["classical"], train_loader, val_loader,
        settings.model_copy(update={"run_fingerprint": run_fingerprint}), train_labels=grades["train"],
    )
    checkpoint = artifacts.classical_checkpoint(hybrid, history)
    return lineage.stamp_classical(checkpoint, ingestion), history


def _checked_grades(
    manifest: pd.DataFrame, image_cache_train: np.ndarray, image_cache_val: np.ndarray,
    model_config: Any,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The caches' ingestion record (they must belong to ``manifest`` and hold the pictures of
    the model's preprocessing) and the grades of their rows, per split; a cache of the wrong
    length is refused."""
    caches = {"train": image_cache_train, "val": image_cache_val}
    ingestion = lineage.check_image_caches(manifest, caches)
    check_pictures(caches, model_config.preprocessing)
    grades = {split: split_grades(manifest, split) for split in ("train", "val")}
    _check_cache(image_cache_train, grades["train"], "train")
    _check_cache(image_cache_val, grades["val"], "val")
    return ingestion, grades


def _image_loaders(
    caches: tuple[np.ndarray, np.ndarray], grades: dict[str, np.ndarray], augment: AugmentationParams,
    settings: Any, model_config: Any,
) -> tuple[Any, Any]:
    """The shuffled, augmented training loader and the plain validation loader, with the model's
    preprocessing."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.data.loaders import loader_options, make_loader
    from qsight_pipeline.data.torch_data import CachedImageDataset
    from qsight_pipeline.training.devices import resolve_device

    train_set = CachedImageDataset(
        caches[0], grades["train"], train=True, augment=augment,
        preprocessing=model_config.preprocessing,
    )
    val_set = CachedImageDataset(
        caches[1], grades["val"], train=False, augment=None,
        preprocessing=model_config.preprocessing,
    )
    options = {
        "seed": settings.seed, **loader_options(settings.num_workers, resolve_device(settings.device)),
    }
    return (
        make_loader(train_set, settings.batch_size, shuffle=True, **options),
        make_loader(val_set, settings.batch_size, shuffle=False, **options),
    )


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
