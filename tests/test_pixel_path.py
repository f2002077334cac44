"""One pixel path (issue 29, items 1-3): a photograph becomes the model's input through one
function, whatever its format; the preprocessing is the encoder's own (timm's data config) and
is saved with the model; the image-size defaults agree."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import timm
import torch
from PIL import Image, ImageOps

from qsight_pipeline.config import ModelParams, RunSettings
from qsight_pipeline.data.image_cache import picture
from qsight_pipeline.data.preprocessing import Preprocessing, PreprocessingError, from_saved
from qsight_pipeline.data.torch_data import model_input, normalise
from qsight_pipeline.inference.api import DatasetConfig
from qsight_pipeline.models.encoders import create_encoder
from qsight_pipeline.models.hybrid import model_preprocessing

# A ViT-like preprocessing that touches every step: crop, bilinear, mean and std of 0.5.
VIT_LIKE = Preprocessing(40, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear",
                         crop_pct=0.9)


def _photograph(width: int = 90, height: int = 64) -> np.ndarray:
    """A non-square RGB fundus-like picture with texture (so resizing and cropping matter)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    disc = ((xx - width / 2) ** 2 + (yy - height / 2) ** 2) < (height / 2.1) ** 2
    noise = rng.integers(0, 60, (height, width, 3))
    return (disc[..., None] * (np.array([190, 90, 40]) + noise)).clip(0, 255).astype(np.uint8)


def _decoded(path) -> np.ndarray:
    """The file's fully decoded pixels, as a user's own reader gives them (upright)."""
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image))


@pytest.mark.parametrize("preprocessing", [VIT_LIKE, Preprocessing(40)], ids=["vit-like", "imagenet"])
@pytest.mark.parametrize("kind", ["jpeg", "jpeg-exif-rotated", "png", "png-16-bit", "tiff"])
def test_a_file_its_decoded_pixels_and_a_lossless_png_of_them_give_the_same_model_input(
    tmp_path, kind, preprocessing
):
    rgb = _photograph()
    path = tmp_path / f"photo.{kind.split('-')[0]}"
    if kind == "png-16-bit":
        Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(path)  # mode I;16
    elif kind == "jpeg-exif-rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # stored sideways, shown rotated 90 degrees
        Image.fromarray(rgb).save(path, quality=85, exif=exif)
    else:
        Image.fromarray(rgb).save(path, **({"quality": 85} if kind == "jpeg" else {}))
    pixels = _decoded(path)
    if kind == "png-16-bit":
        pixels = pixels.astype(np.uint16)  # as a 16-bit reader (OpenCV, imageio) gives them
    lossless = tmp_path / "again.png"
    Image.fromarray(pixels).save(lossless)  # 16-bit stays 16-bit
    from_file = model_input(path, preprocessing)
    assert from_file.shape == (3, 40, 40)
    torch.testing.assert_close(model_input(pixels, preprocessing), from_file, rtol=0, atol=0)
    torch.testing.assert_close(model_input(lossless, preprocessing), from_file, rtol=0, atol=0)
    if kind == "jpeg-exif-rotated":  # decoded upright: the landscape photograph stands up
        assert pixels.shape[:2] == (90, 64)


def test_the_steps_written_for_onnx_users_reproduce_the_model_input_without_this_package():
    rgb = Image.fromarray(_photograph())
    steps = " ".join(VIT_LIKE.recipe())
    assert "bilinear" in steps and "longer side is 44 px" in steps and "centre 40 x 40" in steps
    # Followed by hand with Pillow and NumPy only: longer side 44 (floor(40 / 0.9)), letterboxed
    # on black, centre 40 square (offset round(4 / 2) = 2), / 255, - 0.5, / 0.5.
    resized = np.asarray(rgb.resize((44, 31), Image.Resampling.BILINEAR, reducing_gap=None))
    canvas = np.zeros((44, 44, 3), np.uint8)
    canvas[6:37, :] = resized
    by_hand = (canvas[2:42, 2:42].astype(np.float32) / 255 - 0.5) / 0.5
    ours = model_input(np.asarray(rgb), VIT_LIKE).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, by_hand, atol=1e-6)


@pytest.mark.parametrize(
    "name", ["resnet50", "vit_base_patch16_224", "vit_small_patch14_reg4_dinov2", "efficientnet_b0"]
)
def test_the_preprocessing_is_the_encoders_own_as_timm_resolves_it(name):
    """No download: timm's pretrained_cfg metadata comes with the package."""
    model = timm.create_model(name, pretrained=False, num_classes=0)
    expected = timm.data.resolve_model_data_config(model)
    ours = model_preprocessing(ModelParams(encoder_name=name, encoder_type="vit"), None)
    assert ours.mean == pytest.approx(expected["mean"]) and ours.std == pytest.approx(expected["std"])
    assert (ours.image_size, ours.interpolation) == (expected["input_size"][-1], expected["interpolation"])
    assert ours.crop_pct == pytest.approx(expected["crop_pct"])
    # On a square photograph the whole path is timm's own eval transform (letterboxing changes
    # nothing there), so the encoder sees what its weights were trained on.
    square = Image.fromarray(_photograph(300, 300))
    transform = timm.data.create_transform(**expected, is_training=False)
    torch.testing.assert_close(model_input(np.asarray(square), ours), transform(square),
                               rtol=0, atol=1e-5)


def test_model_preprocessing_overrides_the_encoders_values_from_one_block():
    params = ModelParams(encoder_type="vit", encoder_name=None,
                         preprocessing={"crop_pct": 1.0, "mean": [0.485, 0.456, 0.406]})
    ours = model_preprocessing(params, None)
    assert (ours.crop_pct, ours.mean, ours.std) == (1.0, (0.485, 0.456, 0.406), (0.5, 0.5, 0.5))
    assert "model.preprocessing sets crop_pct, mean" in ours.source


def test_one_image_size_default_the_encoders_own(caplog):
    assert RunSettings().image_size is None
    assert DatasetConfig(root="x").image_size is None
    vit = ModelParams(encoder_type="vit", encoder_name=None, pretrained=True)
    assert model_preprocessing(vit, None).image_size == 224
    # test_vit's own input is 160 px (16 px patches: a 10 x 10 grid) unless a size is given.
    assert create_encoder("vit", "test_vit", pretrained=False).patch_embed.grid_size == (10, 10)
    assert create_encoder("vit", "test_vit", 64, pretrained=False).patch_embed.grid_size == (4, 4)
    with caplog.at_level(logging.INFO):
        assert model_preprocessing(vit, 128).image_size == 128
    assert "run.image_size 128 wins over vit_base_patch16_224.augreg2_in21k_ft_in1k's own input " \
           "size 224" in caplog.text and "run.image_size: null to use 224" in caplog.text


def test_a_preprocessing_saved_before_this_version_reads_as_what_its_training_did():
    legacy = {"image_size": 64, "resize": "letterbox", "mean": [0.485, 0.456, 0.406],
              "std": [0.229, 0.224, 0.225]}  # what model_info.json held before
    settings = from_saved(legacy)
    assert (settings.interpolation, settings.crop_pct, settings.image_size) == ("bicubic", 1.0, 64)
    white = np.full((64, 64, 3), 255, np.uint8)
    assert normalise(white, legacy)[0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229)
    with pytest.raises(PreprocessingError, match=r"resize.*letterbox"):  # the key, what it allows
        from_saved({**legacy, "resize": "squash"})


def test_the_image_cache_pictures_are_the_one_path(tmp_path):
    from qsight_pipeline.data.image_cache import build_image_cache

    paths = []
    for index in range(3):
        paths.append(tmp_path / f"{index}.jpeg")
        Image.fromarray(np.roll(_photograph(), index * 7, axis=1)).save(paths[-1], quality=90)
    cache, failures = build_image_cache(paths, VIT_LIKE, workers=2)
    assert failures == {} and cache.shape == (3, 40, 40, 3)
    for row, path in zip(cache, paths, strict=True):
        np.testing.assert_array_equal(row, picture(_decoded(path), VIT_LIKE))
        torch.testing.assert_close(normalise(row, VIT_LIKE), model_input(path, VIT_LIKE))


def test_on_the_sample_no_grade_changes_between_a_file_its_pixels_and_a_lossless_png(
    smoke_project, tmp_path
):
    """The bundled sample's test split, graded by the smoke run's model as JPEG files, as the
    arrays of their decoded pixels and as lossless PNGs of them."""
    import pandas as pd

    from qsight_pipeline.inference import load_model, predict_images

    loaded = load_model(smoke_project.data("06_models/trained_model"))
    assert loaded.preprocessing["source"].startswith("timm data config of test_resnet")
    manifest = pd.read_csv(smoke_project.data("03_primary/manifest.csv"))
    paths = list(manifest.loc[manifest["split"] == "test", "path"])  # absolute JPEG paths
    arrays = [_decoded(path) for path in paths]
    pngs = []
    for index, array in enumerate(arrays):
        pngs.append(tmp_path / f"{index}.png")
        Image.fromarray(array).save(pngs[-1])
    runs = [predict_images(loaded, inputs, batch_size=16) for inputs in (paths, arrays, pngs)]
    assert len(runs[0]) == len(paths) >= 40 and all(r.error is None for run in runs for r in run)
    for other in runs[1:]:
        for file, again in zip(runs[0], other, strict=True):
            assert (again.grade, again.refer, again.decision) == (file.grade, file.refer, file.decision)
            np.testing.assert_allclose(again.ensemble_probabilities, file.ensemble_probabilities,
                                       atol=1e-6)


def test_the_onnx_file_carries_the_preprocessing_it_needs(smoke_project):
    onnx = pytest.importorskip("onnx")
    from qsight_pipeline.inference import load_model
    from qsight_pipeline.inference.export import export_onnx_bytes

    loaded = load_model(smoke_project.data("06_models/trained_model"))
    props = {p.key: p.value for p in onnx.load_from_string(export_onnx_bytes(loaded)).metadata_props}
    assert json.loads(props["qsight.preprocessing"]) == loaded.preprocessing
    assert "bilinear" in props["qsight.preprocessing_steps"]  # test_resnet's own interpolation


def test_a_checkpoint_saved_before_the_encoders_preprocessing_is_read_as_it_was_trained(smoke_project):
    from qsight_pipeline.inference import predict_image
    from qsight_pipeline.inference.loading import load_checkpoint_file, loaded_from_checkpoint

    checkpoint = load_checkpoint_file(smoke_project.data("06_models/trained_model/complete_checkpoint.pth"))
    old = {"image_size": 32, "resize": "letterbox", "mean": [0.485, 0.456, 0.406],
           "std": [0.229, 0.224, 0.225]}  # all that model_info.json recorded before
    for config in (checkpoint["model_config"], checkpoint["model_info"]["model_config"]):
        config.pop("preprocessing", None)
    checkpoint["model_info"]["preprocessing"] = old
    loaded = loaded_from_checkpoint(checkpoint)
    assert loaded.preprocessing == {**old, "interpolation": "bicubic", "crop_pct": 1.0,
                                    "crop_mode": "center", "source": loaded.preprocessing["source"]}
    assert "saved before" in loaded.preprocessing["source"]
    assert predict_image(loaded, np.full((40, 40, 3), 128, np.uint8)).grade is not None
    # What this version cannot apply is refused, naming the command that rebuilds the model.
    checkpoint["model_info"]["preprocessing"] = {**old, "resize": "squash"}
    with pytest.raises(PreprocessingError, match="`kedro run`"):
        loaded_from_checkpoint(checkpoint)


def test_the_python_api_remakes_the_loaders_pictures_for_the_models_encoder(make_sample, caplog):
    from qsight_pipeline.data.image_cache import build_image_cache
    from qsight_pipeline.inference.api import create_dataloaders, fit_pictures

    root = make_sample(patients=16, size=48)
    train, val, _ = create_dataloaders(DatasetConfig(root=root, batch_size=4, image_size=32,
                                                     val_fraction=0.25, test_fraction=0.25))
    made = train.dataset.preprocessing  # the DatasetConfig's encoder: the demo's test_resnet
    assert (made.interpolation, made.crop_pct) == ("bilinear", 0.95)
    # Another mean and std alone: the same pictures, normalised the model's way.
    pictures = train.dataset.images
    fit_pictures(Preprocessing(32, mean=(0.2, 0.2, 0.2), interpolation="bilinear", crop_pct=0.95), train)
    assert train.dataset.images is pictures and train.dataset.preprocessing.mean == (0.2, 0.2, 0.2)
    # Another encoder's pixel path (test_vit: bicubic): the photographs are decoded again, once.
    vit = model_preprocessing(ModelParams(encoder_type="vit", encoder_name="test_vit"), 32)
    with caplog.at_level(logging.INFO):
        fit_pictures(vit, train, val)
    assert "decoding the" in caplog.text and "test_vit" in caplog.text
    for loader in (train, val):
        np.testing.assert_array_equal(loader.dataset.images, build_image_cache(loader.dataset.paths, vit)[0])
        assert loader.dataset.preprocessing == vit and len(loader.dataset.image_ids) == len(loader.dataset)
