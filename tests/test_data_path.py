"""The data path: loader options per device and on-device batch augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qsight_pipeline.data.device_augment import BatchAugmentation
from qsight_pipeline.data.loaders import loader_options
from qsight_pipeline.data.torch_data import CachedImageDataset


def test_num_workers_auto_is_zero_on_cpu_and_feeds_a_gpu(monkeypatch):
    assert loader_options("auto", torch.device("cpu")) == {
        "num_workers": 0, "pin_memory": False, "persistent_workers": False,
    }  # fmt: skip
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert loader_options("auto", torch.device("cuda", 0)) == {
        "num_workers": 8, "pin_memory": True, "persistent_workers": True,
    }  # fmt: skip
    assert loader_options(0, torch.device("cuda", 0))["persistent_workers"] is False


def test_on_device_augmentation_draws_per_image_and_normalises_like_the_loader():
    pytest.importorskip("kornia")
    rng = np.random.default_rng(0)
    cache = rng.integers(0, 256, (16, 24, 24, 3), dtype=np.uint8)
    grades = np.zeros(16, dtype=np.int64)
    raw = CachedImageDataset(cache, grades, train=True, augment={"on_device": True})
    plain = CachedImageDataset(cache, grades, train=False)
    batch = torch.stack([raw[i]["image"] for i in range(16)])
    assert batch.dtype == torch.uint8 and batch.shape == (16, 3, 24, 24)

    transform = BatchAugmentation({"on_device": True})
    # Evaluation: exactly the loader's own normalisation.
    expected = torch.stack([plain[i]["image"] for i in range(16)])
    torch.testing.assert_close(transform(batch, False), expected, atol=1e-5, rtol=0)
    # Training: every image gets its own draw (flips with p=0.5 and a random rotation).
    torch.manual_seed(0)
    augmented = transform(batch, True)
    changed = [(augmented[i] - expected[i]).abs().mean().item() for i in range(16)]
    assert len({round(c, 4) for c in changed}) > 8
    # Float batches (already normalised by the loader) pass through untouched.
    assert transform(expected, True) is expected
