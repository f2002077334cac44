"""DataLoaders with a seeded order, shared by the image and the feature-cache stages.

DataLoader options that keep a GPU fed, and leave CPU runs exactly as they were.

On CUDA, worker processes decode and augment while the GPU trains, pinned host memory makes the
copies asynchronous (``non_blocking=True`` in the trainer), and persistent workers skip the
start-up of new processes at every epoch. On a CPU the training itself uses every core, so extra
loader processes only compete with it: ``num_workers: auto`` means 0 there, which also keeps the
augmentation random stream (and so the demo's metrics) bit for bit what it always was.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Any

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
    **cuda_options: bool,
) -> DataLoader:
    """A DataLoader with a seeded generator (shuffled loaders) for reproducible order.

    ``cuda_options``: ``pin_memory`` and ``persistent_workers``, as :func:`loader_options` gives
    them (on for CUDA only; off when omitted).
    """
    unknown = set(cuda_options) - {"pin_memory", "persistent_workers"}
    if unknown:
        raise TypeError(f"make_loader: unknown options {sorted(unknown)}")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=cuda_options.get("pin_memory", False),
        persistent_workers=cuda_options.get("persistent_workers", False),
        generator=_loader_generator(seed) if shuffle else None,
        drop_last=False,
        multiprocessing_context=worker_context(num_workers),
    )


def worker_context(num_workers: int) -> str | None:
    """``fork`` for loader processes on Linux, whatever this process's default start method.

    A DDP worker comes from a fork server (``training.distributed.launch``) and takes its
    launcher's start method as its own default: its loader processes would then come from a
    new interpreter of their own (re-importing torch and the project, tens of seconds on a GPU
    machine) and receive the dataset by pickle.
    Forking is what a ``torchrun`` script gets on Linux, and it is safe here because loader
    processes never touch CUDA. Elsewhere (macOS, Windows) the platform's default stays, and
    :class:`~qsight_pipeline.data.torch_data.CachedImageDataset` pickles its memory-mapped cache
    as a file reference, not as a copy.
    """
    if num_workers <= 0 or not sys.platform.startswith("linux"):
        return None
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else None


def class_counts(labels: np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=NUM_GRADES)


# More loader processes than this rarely help one GPU and cost memory (each holds a model-free
# copy of the dataset object and its own prefetch queue).
MAX_AUTO_WORKERS = 8


def loader_workers(num_workers: int | str, device: torch.device) -> int:
    """``num_workers`` as a number: ``auto`` is ``min(8, CPUs - 1)`` on CUDA and 0 elsewhere."""
    if num_workers != "auto":
        return int(num_workers)
    if device.type != "cuda":
        return 0
    return max(0, min(MAX_AUTO_WORKERS, (os.cpu_count() or 1) - 1))


def loader_options(num_workers: int | str, device: torch.device) -> dict[str, Any]:
    """``num_workers``, ``pin_memory`` and ``persistent_workers`` for loaders feeding ``device``."""
    workers = loader_workers(num_workers, device)
    cuda = device.type == "cuda"
    return {
        "num_workers": workers,
        "pin_memory": cuda,
        "persistent_workers": cuda and workers > 0,
    }
