"""DataLoaders with a seeded order, shared by the image and the feature-cache stages."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from qsight_pipeline.constants import NUM_GRADES


def _loader_generator(seed: int) -> torch.Generator:
    # The trainer checkpoints this generator's state, so a resumed run shuffles exactly as an
    # uninterrupted one would.
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader with a seeded generator (shuffled loaders) for reproducible order."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=_loader_generator(seed) if shuffle else None,
        drop_last=False,
    )


def class_counts(labels: np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=NUM_GRADES)


