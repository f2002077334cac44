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
from qsight_pipeline.training.distributed_plan import worker_plan
from qsight_pipeline.training.run_config import RunConfig

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


def embed_frozen_encoder(
    image_cache_train: np.ndarray,
    image_cache_val: np.ndarray,
    image_cache_test: np.ndarray,
    run_config: RunConfig,
    model_config: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``embedding_cache_train``, ``_val``, ``_test``: when no stage trains the encoder
    (``model.freeze_encoder``, or image stages that never list it), every cached picture through
    the encoder once, with its lineage (``training.frozen_encoder``); otherwise an empty table
    each, which writes nothing (``training.embedding_cache.no_table``)."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.training import frozen_encoder
    from qsight_pipeline.training.embedding_cache import no_table

    caches = {"train": image_cache_train, "val": image_cache_val, "test": image_cache_test}
    if not frozen_encoder.encoder_frozen(model_config.freeze_encoder, run_config.schedule["classical"]):
        return no_table(), no_table(), no_table()
    check_pictures(caches, model_config.preprocessing)
    tables = frozen_encoder.embed_image_caches(caches, model_config, run_config.trainer_settings())
    return tables["train"], tables["val"], tables["test"]


def train_classical_model(
    model_inputs: dict[str, Any],
    manifest: pd.DataFrame,
    run_config: RunConfig,
    model_config: Any,
    augmentation: AugmentationParams,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train the schedule's image stages on the decode-once image cache, or, when the encoder is
    frozen, on its embedding table (without augmentation, and said so).

    Args:
        model_inputs: per split the uint8 (N, S, S, 3) image cache and the embedding table or None
            (``kedro_app.model_inputs``), rows in ``cache_index`` order.
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
    from qsight_pipeline.training.frozen_encoder import EMBEDDED_ONLY, encoder_frozen
    from qsight_pipeline.training.trainer import seed_everything

    images = model_inputs["images"]
    settings = with_device_augmentation(
        run_config.trainer_settings(), augmentation, model_config.preprocessing
    )
    seed_everything(settings.seed)

    ingestion, grades = _checked_grades(manifest, images["train"], images["val"], model_config)
    data = manifest[["image_id", "grade", "split"]].to_dict("list")
    if encoder_frozen(model_config.freeze_encoder, run_config.schedule["classical"]):
        if augmentation.enabled:
            logger.info(EMBEDDED_ONLY)
        checkpoint, history = _train_frozen(
            model_inputs["embeddings"], (grades, data), ingestion, run_config, model_config, settings
        )
    else:
        checkpoint, history = _train_on_images(
            images, (grades, data), run_config, model_config, augmentation, settings
        )
    return lineage.stamp_classical(checkpoint, ingestion), history


def _train_on_images(
    images: dict[str, np.ndarray], labels: tuple[dict[str, np.ndarray], dict[str, list]],
    run_config: RunConfig, model_config: Any, augmentation: AugmentationParams, settings: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The image stages on the image cache (DDP when ``distributed`` asks for it)."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.models.hybrid import build_model
    from qsight_pipeline.training import artifacts, workflow
    from qsight_pipeline.training.checkpoints import fingerprint
    from qsight_pipeline.training.ddp_jobs import ClassicalJob, train_classical_ddp

    grades, data = labels
    augment = augmentation.to_dict()  # for the fingerprint; the typed block travels on
    run_fingerprint = fingerprint("classical", artifacts.model_config_dict(model_config),
                                  settings.batch_size, augment, data)
    plan = worker_plan(run_config.distributed, settings)
    if plan.enabled:
        job = ClassicalJob(
            config=model_config, stages=run_config.schedule["classical"], settings=settings,
            batch_size=settings.batch_size, augment=augmentation, num_workers=settings.num_workers,
            train_grades=grades["train"], val_grades=grades["val"], fingerprint=run_fingerprint,
        )
        return _only_machine_zero_returns(
            train_classical_ddp(plan, job, images["train"], images["val"]), plan
        )

    hybrid = build_model(model_config)
    train_loader, val_loader = _image_loaders(
        (images["train"], images["val"]), grades, augmentation, settings, model_config
    )
    history = workflow.train_image_stages(
        hybrid, run_config.schedule["classical"], train_loader, val_loader,
        settings.model_copy(update={"run_fingerprint": run_fingerprint}), train_labels=grades["train"],
    )
    return artifacts.classical_checkpoint(hybrid, history), history


def _train_frozen(
    tables: dict[str, Any], labels: tuple[dict[str, np.ndarray], dict[str, list]], ingestion: str,
    run_config: RunConfig, model_config: Any, settings: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The image stages, encoder frozen, from its embedding table: in this process (a few MLPs
    on rows of numbers need no DDP workers); machines other than 0 stop here."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.models.hybrid import build_model
    from qsight_pipeline.training import artifacts
    from qsight_pipeline.training.checkpoints import fingerprint
    from qsight_pipeline.training.frozen_encoder import train_on_embeddings

    plan = worker_plan(run_config.distributed, settings)
    if plan.enabled and plan.node_rank > 0:
        _only_machine_zero_returns(None, plan)
    if plan.enabled:
        logger.info("The encoder is frozen: training from its embedding table in this process "
                    "(the distributed workers serve image stages)")
    grades, data = labels
    hybrid = build_model(model_config)  # the same seed as the embedding step: the same encoder
    run_fingerprint = fingerprint(
        "classical-embeddings", artifacts.model_config_dict(model_config), settings.batch_size,
        (lineage.of(tables["train"]) or {}).get("encoder_id"), data,
    )
    history = train_on_embeddings(
        hybrid, run_config.schedule["classical"], tables, grades, ingestion,
        settings.model_copy(update={"run_fingerprint": run_fingerprint}),
    )
    return artifacts.classical_checkpoint(hybrid, history), history


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
    # machine that must not write (docs/distributed.md).
    raise SystemExit(0)
