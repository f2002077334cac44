"""Nodes of the ``features`` pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from qsight_pipeline.data.preprocessing import check_pictures
from qsight_pipeline.data.splits import split_grades, split_image_ids
from qsight_pipeline.files import lineage
from qsight_pipeline.kedro_app.run_config import RunConfig
from qsight_pipeline.training.distributed_plan import worker_plan


def export_quantum_training_data(
    phase1_classical_model: dict[str, Any],
    image_cache_train: np.ndarray,
    image_cache_val: np.ndarray,
    image_cache_test: np.ndarray,
    manifest: pd.DataFrame,
    run_config: RunConfig,
) -> dict[str, Any]:
    """Run the frozen classical model over every split once.

    Returns:
        ``quantum_training_data``: per split the compressed features, head A/B logits, labels
        and image ids, plus the metadata and head weights the cache stages rebuild the model from.
        With ``distributed.nproc_per_node > 1`` (``run_config.distributed``) this machine's workers each take a slice of
        every split (DDP workers, no gradients), and the slices are joined in order.
    """
    # lazy: kept out of kedro start-up
    from qsight_pipeline.files import artifacts
    from qsight_pipeline.training import workflow

    caches = {"train": image_cache_train, "val": image_cache_val, "test": image_cache_test}
    lineage.check_image_caches(manifest, caches)
    record = lineage.classical_for_manifest(
        phase1_classical_model, manifest, run_config.settings.output_dir
    )
    model = artifacts.load_classical_checkpoint(phase1_classical_model)
    check_pictures(caches, model.config.preprocessing)
    batch_size = run_config.batch_size
    settings = run_config.trainer_settings()
    plan = worker_plan(run_config.distributed, settings).local_only()
    if plan.enabled:
        # lazy: kept out of kedro start-up
        from qsight_pipeline.training.ddp_jobs import FeatureJob, export_features_ddp

        job = FeatureJob(
            checkpoint_file="",
            grades={split: split_grades(manifest, split) for split in caches},
            image_ids={split: split_image_ids(manifest, split) for split in caches},
            batch_size=batch_size,
            settings=settings,
        )
        cache = export_features_ddp(plan, phase1_classical_model, caches, job)
        cache["metadata"][lineage.LINEAGE_KEY] = record
        return cache
    loaders = _plain_loaders(caches, manifest, model.config.preprocessing, settings)
    image_ids = {split: split_image_ids(manifest, split) for split in caches}
    cache = workflow.export_features(model, loaders, image_ids, settings)
    cache["metadata"][lineage.LINEAGE_KEY] = record
    return cache


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
