"""DataLoader options that keep a GPU fed, and leave CPU runs exactly as they were.

On CUDA, worker processes decode and augment while the GPU trains, pinned host memory makes the
copies asynchronous (``non_blocking=True`` in the trainer), and persistent workers skip the
start-up of new processes at every epoch. On a CPU the training itself uses every core, so extra
loader processes only compete with it: ``num_workers: auto`` means 0 there, which also keeps the
augmentation random stream (and so the demo's metrics) bit for bit what it always was.
"""

from __future__ import annotations

import os
from typing import Any

import torch

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
