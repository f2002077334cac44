"""Decoding images into the uint8 cache, and the cache's round trip through NpyDataset."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from qsight_pipeline.data import image_cache
from qsight_pipeline.data.image_cache import ImageDecodeError, build_image_cache, load_image
from qsight_pipeline.kedro_app.datasets import NpyDataset


def write_image(path, size=(200, 150), mode="RGB", colour=(200, 90, 40)):
    Image.new(mode, size, colour if mode == "RGB" else 128).save(path)
    return path


def test_load_image_pads_non_square_images_onto_black(tmp_path):
    path = write_image(tmp_path / "wide.jpeg", size=(400, 200))
    image = load_image(path, 40)
    assert image.shape == (40, 40, 3) and image.dtype == np.uint8
    assert image[:9].max() == 0 and image[-9:].max() == 0  # 10 black rows above and below
    assert np.abs(image[20, 20].astype(int) - (200, 90, 40)).max() <= 3


@pytest.mark.parametrize(("name", "mode"), [("grey.png", "L"), ("alpha.png", "RGBA"), ("x.jpg", "RGB")])
def test_load_image_gives_rgb_for_any_mode(tmp_path, name, mode):
    path = write_image(tmp_path / name, mode=mode)
    assert load_image(path, 16).shape == (16, 16, 3)


def test_a_jpeg_is_decoded_in_full_then_resized(make_sample):
    # No reduced-scale (draft) decoding: the picture is exactly the full decode, resized.
    root = make_sample(patients=2, size=256)
    path = next((root / "resized_train" / "resized_train").glob("*.jpeg"))
    with Image.open(path) as full:
        reference = full.convert("RGB").resize((64, 64), Image.Resampling.BICUBIC, reducing_gap=None)
    np.testing.assert_array_equal(load_image(path, 64), np.asarray(reference))


def test_truncated_missing_and_non_image_files_are_named(tmp_path):
    good = write_image(tmp_path / "good.jpeg", size=(300, 300))
    truncated = tmp_path / "truncated.jpeg"
    truncated.write_bytes(good.read_bytes()[:400])
    text = tmp_path / "text.png"
    text.write_text("not a png")
    for path, reason in [(truncated, "truncated"), (text, "cannot identify"), (tmp_path / "gone.jpeg", "file not found")]:
        with pytest.raises(ImageDecodeError, match=reason) as caught:
            load_image(path, 32)
        assert str(path) in str(caught.value)


def test_build_image_cache_keeps_order_and_reports_failures(tmp_path):
    paths = [
        write_image(tmp_path / f"{i}.png", size=(50, 50), colour=(i * 40, 0, 0)) for i in range(4)
    ]
    paths.insert(2, tmp_path / "missing.jpeg")
    cache, failures = build_image_cache(paths, 8, workers=2)
    assert cache.shape == (5, 8, 8, 3)
    assert list(failures) == [2] and "missing.jpeg" in failures[2]
    assert cache[[0, 1, 3, 4], 4, 4, 0].tolist() == [0, 40, 80, 120]
    assert cache[2].max() == 0


def test_large_caches_live_in_an_unlinked_temporary_file(tmp_path, monkeypatch):
    monkeypatch.setattr(image_cache, "_IN_MEMORY_LIMIT_BYTES", 0)
    monkeypatch.setattr(image_cache.tempfile, "tempdir", str(tmp_path))
    cache, _ = build_image_cache([write_image(tmp_path / "a.png")], 8, workers=1)
    assert isinstance(cache, np.memmap) and cache[0].max() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_cache_round_trip_through_npy_dataset(tmp_path, make_sample):
    root = make_sample(patients=3, size=48)
    paths = sorted((root / "resized_train" / "resized_train").glob("*.jpeg"))
    cache, failures = build_image_cache(paths, 32)
    assert not failures
    dataset = NpyDataset(str(tmp_path / "image_cache_train.npy"))
    dataset.save(cache)
    loaded = dataset.load()
    assert isinstance(loaded, np.memmap)  # read lazily by the training pipelines
    assert loaded.dtype == np.uint8 and loaded.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(loaded, cache)
    np.testing.assert_array_equal(loaded[4], load_image(paths[4], 32))
