"""CachedImageDataset and the image transform shared with prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from qsight_pipeline.data.torch_data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CachedImageDataset,
    build_image_transform,
)


@pytest.fixture
def cache():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(6, 24, 24, 3), dtype=np.uint8)


def test_items_are_normalised_float_images_and_int64_grades(cache):
    dataset = CachedImageDataset(cache, np.arange(6) % 5, image_size=24)
    item = dataset[3]
    assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.float32
    assert item["grade"].dtype == torch.int64 and item["grade"].item() == 3
    expected = (cache[3, 5, 7, 1] / 255 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert item["image"][1, 5, 7].item() == pytest.approx(expected, abs=1e-5)


def test_resizes_to_the_requested_size_and_batches(cache):
    dataset = CachedImageDataset(cache, np.zeros(6), image_size=16)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["grade"].shape == (4,)


def test_augmentation_is_random_but_repeatable_under_a_seed(cache):
    dataset = CachedImageDataset(cache, np.zeros(6), train=True, augment={}, image_size=24)
    torch.manual_seed(0)
    first = [dataset[0]["image"] for _ in range(4)]
    torch.manual_seed(0)
    again = [dataset[0]["image"] for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(first[0], other) for other in first[1:])


@pytest.mark.parametrize(
    ("train", "augment"), [(False, {}), (True, None), (True, {"enabled": False})]
)
def test_no_augmentation_outside_training_or_when_disabled(cache, train, augment):
    dataset = CachedImageDataset(cache, np.zeros(6), train=train, augment=augment)
    assert torch.equal(dataset[1]["image"], dataset[1]["image"])


def test_unknown_augmentation_key_is_named():
    with pytest.raises(ValueError, match="augmentation.rotation: unknown key"):
        build_image_transform(32, train=True, augment={"rotation": 10})


def test_transform_accepts_an_image_of_any_size():
    image = np.full((50, 70, 3), 255, dtype=np.uint8)
    tensor = build_image_transform(32)(image)
    assert tensor.shape == (3, 32, 32)
    assert tensor[0].max().item() == pytest.approx((1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], abs=1e-5)


def test_rejects_arrays_that_are_not_the_cache(cache):
    with pytest.raises(ValueError, match="uint8 \\(N, H, W, 3\\)"):
        CachedImageDataset(cache.astype(np.float32), np.zeros(6))
    with pytest.raises(ValueError, match="6 images but 5 grades"):
        CachedImageDataset(cache, np.zeros(5))
