"""Nodes of the ``features`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from qsight_pipeline.data.preprocessing import check_pictures
from qsight_pipeline.data.splits import split_grades, split_image_ids
from qsight_pipeline.files import lineage
from qsight_pipeline.training.distributed_plan import worker_plan
from qsight_pipeline.training.run_config import RunConfig

logger = logging.getLogger(__name__)


def export_quantum_training_data(
    phase1_classical_model: dict[str, Any],
    model_inputs: dict[str, Any],
    manifest: pd.DataFrame,
    run_config: RunConfig,
) -> dict[str, Any]:
    """Run the frozen classical model over every split once.

    Args:
        model_inputs: per split the image cache and the embedding table or None
            (``kedro_app.model_inputs``). When every table was made by this model's encoder from
            these pictures, the export starts from them and the encoder does not run again.

    Returns:
        ``quantum_training_data``: per split the compressed features, head A/B logits, labels
        and image ids, plus the metadata and head weights the cache stages rebuild the model from.
        With ``distributed.nproc_per_node > 1`` (``run_config.distributed``) this machine's workers each take a slice of
        every split (DDP workers, no gradients), and the slices are joined in order.
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.training import artifacts, workflow
    from qsight_pipeline.training.frozen_encoder import usable_tables

    caches = dict(model_inputs["images"])
    ingestion = lineage.check_image_caches(manifest, caches)
    record = lineage.classical_for_manifest(
        phase1_classical_model, manifest, run_config.settings.output_dir
    )
    model = artifacts.load_classical_checkpoint(phase1_classical_model)
    check_pictures(caches, model.config.preprocessing)
    settings = run_config.trainer_settings()
    image_ids = {split: split_image_ids(manifest, split) for split in caches}
    tables = usable_tables(model_inputs["embeddings"], model, ingestion)
    plan = worker_plan(run_config.distributed, settings).local_only()
    if tables is not None:
        logger.info("Features from the frozen encoder's embedding tables: the encoder does not run")
        cache = workflow.export_features(model, _table_loaders(tables, manifest, settings), image_ids, settings)
    elif plan.enabled:
        cache = _export_ddp(phase1_classical_model, caches, manifest, settings, plan)
    else:
        loaders = _plain_loaders(caches, manifest, model.config.preprocessing, settings)
        cache = workflow.export_features(model, loaders, image_ids, settings)
    cache["metadata"][lineage.LINEAGE_KEY] = record
    return cache


def _export_ddp(
    phase1_classical_model: dict[str, Any], caches: dict[str, np.ndarray], manifest: pd.DataFrame,
    settings: Any, plan: Any,
) -> dict[str, Any]:
    """This machine's DDP workers each take a slice of every split; the slices joined in order."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.training.ddp_jobs import FeatureJob, export_features_ddp

    job = FeatureJob(
        checkpoint_file="",
        grades={split: split_grades(manifest, split) for split in caches},
        image_ids={split: split_image_ids(manifest, split) for split in caches},
        batch_size=settings.batch_size,
        settings=settings,
    )
    return export_features_ddp(plan, phase1_classical_model, caches, job)


def _table_loaders(
    tables: dict[str, np.ndarray], manifest: pd.DataFrame, settings: Any
) -> dict[str, Any]:
    """One unshuffled loader per split over the embedding table's rows, in cache order."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.data.loaders import make_loader
    from qsight_pipeline.training.embedding_cache import EmbeddingDataset

    return {
        split: make_loader(
            EmbeddingDataset(table, split_grades(manifest, split)), settings.batch_size,
            shuffle=False, seed=settings.seed,
        )
        for split, table in tables.items()
    }


def _plain_loaders(
    caches: dict[str, np.ndarray], manifest: pd.DataFrame, preprocessing: dict[str, Any],
    settings: Any,
) -> dict[str, Any]:
    """One unshuffled, unaugmented loader per split, in cache order."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.data.loaders import make_loader
    from qsight_pipeline.data.torch_data import CachedImageDataset

    return {
        split: make_loader(
            CachedImageDataset(
                images, split_grades(manifest, split), train=False, augment=None,
                preprocessing=preprocessing,
            ),
            settings.batch_size,
            shuffle=False,
            seed=settings.seed,
        )
        for split, images in caches.items()
    }
