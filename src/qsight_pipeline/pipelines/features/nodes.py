"""Nodes of the ``features`` pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from qsight_pipeline.pipelines.classical.nodes import split_grades, split_image_ids
from qsight_pipeline.run_config import RunConfig


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
    """
    from qsight_pipeline import workflow
    from qsight_pipeline.data.torch_data import CachedImageDataset

    model = workflow.load_classical_checkpoint(phase1_classical_model)
    image_size = model.config.image_size
    caches = {"train": image_cache_train, "val": image_cache_val, "test": image_cache_test}
    batch_size = run_config.batch_size
    settings = run_config.trainer_settings()
    loaders = {
        split: workflow.make_loader(
            CachedImageDataset(
                images, split_grades(manifest, split), train=False, augment=None,
                image_size=image_size,
            ),
            batch_size,
            shuffle=False,
            seed=settings.seed,
        )
        for split, images in caches.items()
    }
    image_ids = {split: split_image_ids(manifest, split) for split in caches}
    return workflow.export_features(model, loaders, image_ids, settings)
