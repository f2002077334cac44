"""CachedImageDataset and the image transform shared with prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from qsight_pipeline.data.preprocessing import Preprocessing
from qsight_pipeline.data.torch_data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CachedImageDataset,
    build_image_transform,
)
from qsight_pipeline.errors import ArtifactError


@pytest.fixture
def cache():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(6, 24, 24, 3), dtype=np.uint8)


def test_items_are_normalised_float_images_and_int64_grades(cache):
    dataset = CachedImageDataset(cache, np.arange(6) % 5, preprocessing=24)
    item = dataset[3]
    assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.float32
    assert item["grade"].dtype == torch.int64 and item["grade"].item() == 3
    expected = (cache[3, 5, 7, 1] / 255 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert item["image"][1, 5, 7].item() == pytest.approx(expected, abs=1e-5)


def test_batches_and_refuses_a_cache_made_for_another_input_size(cache):
    batch = next(iter(DataLoader(CachedImageDataset(cache, np.zeros(6)), batch_size=4)))
    assert batch["image"].shape == (4, 3, 24, 24) and batch["grade"].shape == (4,)
    # A cache at 24 px is not silently resized for a 16 px model: one pixel path.
    with pytest.raises(ArtifactError, match=r"24.*16") as info:  # the cache's size, the model's
        CachedImageDataset(cache, np.zeros(6), preprocessing=16)
    assert "kedro run --pipelines ingestion" in str(info.value)  # the way out


def test_augmentation_is_random_but_repeatable_under_a_seed(cache):
    dataset = CachedImageDataset(cache, np.zeros(6), train=True, augment={}, preprocessing=24)
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


def test_transform_normalises_with_the_models_mean_and_std_and_refuses_other_sizes():
    white = np.full((32, 32, 3), 255, dtype=np.uint8)
    tensor = build_image_transform(32)(white)  # a side alone: the ImageNet statistics of before
    assert tensor.shape == (3, 32, 32)
    assert tensor[0].max().item() == pytest.approx((1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], abs=1e-5)
    half = Preprocessing(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # e.g. a ViT's weights
    assert build_image_transform(half)(white).unique().tolist() == [1.0]
    with pytest.raises(ArtifactError, match=r"\(50, 70\).*32"):  # the picture's size, the model's
        build_image_transform(32)(np.full((50, 70, 3), 255, dtype=np.uint8))


def test_rejects_arrays_that_are_not_the_cache(cache):
    with pytest.raises(ValueError, match="uint8"):
        CachedImageDataset(cache.astype(np.float32), np.zeros(6))
    with pytest.raises(ValueError, match=r"\b6\b.*\b5\b"):  # the two lengths
        CachedImageDataset(cache, np.zeros(5))
