"""The data path: loader options per device and on-device batch augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qsight_pipeline.data.device_augment import BatchAugmentation
from qsight_pipeline.data.loaders import loader_options
from qsight_pipeline.data.preprocessing import Preprocessing
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
    pixels = Preprocessing(24, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))  # the encoder's own
    raw = CachedImageDataset(cache, grades, train=True, augment={"on_device": True}, preprocessing=pixels)
    plain = CachedImageDataset(cache, grades, train=False, preprocessing=pixels)
    batch = torch.stack([raw[i]["image"] for i in range(16)])
    assert batch.dtype == torch.uint8 and batch.shape == (16, 3, 24, 24)

    transform = BatchAugmentation({"on_device": True}, pixels)
    # Evaluation: exactly the loader's own normalisation, with the encoder's mean and std.
    expected = torch.stack([plain[i]["image"] for i in range(16)])
    torch.testing.assert_close(transform(batch, False), expected, atol=1e-5, rtol=0)
    # Training: every image gets its own draw (flips with p=0.5 and a random rotation).
    torch.manual_seed(0)
    augmented = transform(batch, True)
    changed = [(augmented[i] - expected[i]).abs().mean().item() for i in range(16)]
    assert len({round(c, 4) for c in changed}) > 8
    # Float batches (already normalised by the loader) pass through untouched.
    assert transform(expected, True) is expected


def test_a_memory_mapped_cache_reaches_spawned_loader_processes_as_a_file_reference(tmp_path):
    """A DDP worker is a spawned process, and macOS spawns loader processes too: the dataset
    is then pickled into every loader process, and the cache must not be copied with it."""
    import pickle

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    np.save(tmp_path / "cache.npy", pixels)
    cache = np.load(tmp_path / "cache.npy", mmap_mode="r")
    for view in (cache, cache[9:23], cache[39:]):  # the splits and shards are slices
        dataset = CachedImageDataset(view, np.arange(len(view)) % 5)
        payload = pickle.dumps(dataset)
        assert len(payload) < 4096 < view.nbytes
        copy = pickle.loads(payload)
        assert isinstance(copy.images, np.memmap)
        np.testing.assert_array_equal(copy.images, view)
        torch.testing.assert_close(copy[0]["image"], dataset[0]["image"])
    in_memory = CachedImageDataset(pixels, np.zeros(40, dtype=np.int64))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(in_memory)).images, pixels)


def test_loader_processes_are_forked_on_linux_even_inside_a_spawned_worker(tmp_path):
    import sys

    from qsight_pipeline.data.loaders import make_loader, worker_context

    dataset = CachedImageDataset(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, np.int64))
    assert make_loader(dataset, 2, shuffle=False, seed=0).multiprocessing_context is None
    loader = make_loader(dataset, 2, shuffle=False, seed=0, num_workers=2)
    if sys.platform.startswith("linux"):
        assert worker_context(2) == "fork"
        assert loader.multiprocessing_context.get_start_method() == "fork"
        assert sum(len(batch["grade"]) for batch in loader) == 4
    else:
        assert worker_context(2) is None
