"""The Python API decodes an array exactly as it decodes the file the array came from: 16-bit,
float [0, 1], grayscale and RGBA arrays give the pixels, and so the probabilities, of the file;
anything else is a clear error (image_cache.load_array shares load_image's steps)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from qsight_pipeline.data.image_cache import ImageArrayError, load_array, load_image
from qsight_pipeline.errors import UserError
from qsight_pipeline.inference import load_model, predict_image, predict_images
from qsight_pipeline.inference.predict import decode
from tests.test_image_decoding import png_48_bit

SIZE = 32
SAMPLE = "data/01_raw/sample/resized_train/resized_train"


def _picture(height: int = 40, width: int = 52) -> np.ndarray:
    """A non-square 8-bit RGB picture with texture (so that the letterbox and resize matter)."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(0)
    channels = [(x * 4 + y * 2) % 256, (y * 5) % 256, rng.integers(0, 256, (height, width))]
    return np.stack(channels, axis=-1).astype(np.uint8)


def _to_16_bit(array8: np.ndarray) -> np.ndarray:
    """The same picture at 16 bits: each 8-bit value v becomes v * 257 plus low bits n that do not
    change its 8-bit value (the high byte keeps v while v + n < 256, round(v * 255 / 65535) while
    n < 128)."""
    noise = np.random.default_rng(1).integers(0, 128, array8.shape)
    noise = np.minimum(noise, 255 - array8.astype(np.int64))
    return (array8.astype(np.uint16) * 257 + noise).astype(np.uint16)


# --------------------------------------------------------------------------- pixels


def test_a_16_bit_grayscale_array_decodes_as_its_png(tmp_path):
    gray8 = _picture()[..., 0]
    path = tmp_path / "gray16.png"
    Image.fromarray(_to_16_bit(gray8)).save(path)
    as_opened = np.asarray(Image.open(path))  # the np.asarray(Image.open("gray16.png"))
    assert as_opened.dtype == np.uint16
    expected = load_image(path, SIZE)
    np.testing.assert_array_equal(load_array(as_opened, SIZE), expected)
    np.testing.assert_array_equal(load_array(as_opened[..., None], SIZE), expected)
    np.testing.assert_array_equal(load_array(gray8, SIZE), expected)
    np.testing.assert_array_equal(load_array(gray8.astype(np.float32) / 255, SIZE), expected)
    assert (expected == 255).mean() < 0.05  # not clipped to white


def test_16_bit_rgb_float_and_rgba_arrays_decode_as_their_files(tmp_path):
    rgb8 = _picture()
    rgb16 = _to_16_bit(rgb8)
    png_48_bit(tmp_path / "rgb48.png", rgb16)
    Image.fromarray(rgb8).save(tmp_path / "rgb8.png")
    expected = load_image(tmp_path / "rgb8.png", SIZE)
    np.testing.assert_array_equal(load_image(tmp_path / "rgb48.png", SIZE), expected)
    for array in (rgb16, rgb8, rgb8 / 255.0, (rgb8 / 255.0).astype(np.float16),
                  np.dstack([rgb8, np.full(rgb8.shape[:2], 255, np.uint8)]),
                  np.dstack([rgb16, np.full(rgb8.shape[:2], 65535, np.uint16)]),
                  np.asfortranarray(rgb8), rgb8[..., ::-1][..., ::-1]):
        np.testing.assert_array_equal(load_array(array, SIZE), expected, err_msg=str(array.dtype))


def test_transparency_is_composited_onto_black_as_for_a_png(tmp_path):
    rgba = np.dstack([_picture(), np.tile(np.linspace(0, 255, 52).astype(np.uint8), (40, 1))])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(rgba[..., [0, 3]]).save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_array(rgba, SIZE), load_image(tmp_path / "rgba.png", SIZE))
    np.testing.assert_array_equal(load_array(rgba[..., [0, 3]], SIZE), load_image(tmp_path / "la.png", SIZE))
    # The transparent left side is dark (composited onto black), not the opaque picture.
    left = (slice(None), slice(0, SIZE // 4))
    assert load_array(rgba, SIZE)[left].mean() < 0.3 * load_array(rgba[..., :3], SIZE)[left].mean()


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((8, 8, 3), 1.5), r"values in \[0, 1\]; this one ranges over \[1.5, 1.5\]"),
        (np.full((8, 8), -0.1, np.float32), r"values in \[0, 1\]"),
        (np.array([[0.5, np.nan]]), r"values in \[0, 1\]; this one ranges over \[nan"),
        (np.full((8, 8, 3), 255.0), r"Divide 8-bit values by 255"),
        (np.zeros((8, 8, 3), np.int32), "dtype int32 is not supported: pass uint8"),
        (np.zeros((8, 8), bool), "dtype bool is not supported"),
        (np.zeros((8, 8, 5), np.uint8), r"shape \(8, 8, 5\) is not an image"),
        (np.zeros((2, 8, 8, 3), np.uint8), r"shape \(2, 8, 8, 3\) is not an image"),
        (np.zeros(64, np.uint8), r"shape \(64,\) is not an image"),
        (np.zeros((0, 8, 3), np.uint8), "has no pixels"),
    ],
)
def test_arrays_that_are_not_images_are_refused_with_the_reason(array, message):
    with pytest.raises(ImageArrayError, match=message) as info:
        decode(array, {"image_size": SIZE})
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_the_api_raises_for_a_bad_array_before_grading_anything():
    loaded = SimpleNamespace(preprocessing={"image_size": SIZE})  # never reached
    with pytest.raises(ImageArrayError, match=r"^image: a float image must hold values in \[0, 1\]"):
        predict_image(loaded, np.full((8, 8, 3), 2.0))
    good = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ImageArrayError, match=r"^images\[1\]: an image array of dtype int64"):
        predict_images(loaded, [good, np.zeros((8, 8, 3), np.int64), good])


# --------------------------------------------------------------------------- probabilities


@pytest.fixture(scope="module")
def trained(smoke_project):
    """The smoke run's trained model (session fixture) and one of the sample's photographs."""
    model = load_model(smoke_project.data("06_models/trained_model"), device="cpu")
    photo = sorted((smoke_project.path / SAMPLE).glob("*.jpeg"))[0]
    rgb8 = np.asarray(Image.open(photo).convert("RGB"))[:, 20:220]  # non-square
    return model, np.ascontiguousarray(rgb8)


def _probabilities(model, image) -> np.ndarray:
    result = predict_image(model, image)
    assert result.error is None, result.error
    return np.array(result.ensemble_probabilities)


def _model_input(model, image) -> np.ndarray:
    """The picture the model gets (predict's own decode): equal pictures give equal grades for
    any model, however little the shared smoke model's probabilities move."""
    from qsight_pipeline.inference.predict import decode

    return decode(image, model.preprocessing).astype(np.int16)


def test_16_bit_float_grayscale_and_rgba_inputs_give_the_8_bit_probabilities(trained, tmp_path):
    model, rgb8 = trained
    rgb16 = _to_16_bit(rgb8)
    gray8 = np.asarray(Image.fromarray(rgb8).convert("L"))
    gray16 = _to_16_bit(gray8)
    Image.fromarray(rgb8).save(tmp_path / "rgb8.png")
    png_48_bit(tmp_path / "rgb48.png", rgb16)
    Image.fromarray(gray8).save(tmp_path / "gray8.png")
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    opaque = np.full(rgb8.shape[:2], 255, np.uint8)

    colour = _probabilities(model, tmp_path / "rgb8.png")
    colour_input = _model_input(model, tmp_path / "rgb8.png")
    for name, image in {
        "8-bit array": rgb8, "16-bit array": rgb16, "48-bit PNG": tmp_path / "rgb48.png",
        "float [0, 1]": rgb8.astype(np.float32) / 255, "RGBA": np.dstack([rgb8, opaque]),
        "16-bit RGBA": np.dstack([rgb16, opaque.astype(np.uint16) * 257]),
    }.items():
        np.testing.assert_allclose(_probabilities(model, image), colour, atol=1e-3, err_msg=name)
        assert np.abs(_model_input(model, image) - colour_input).max() <= 1, name

    gray = _probabilities(model, tmp_path / "gray8.png")
    gray_input = _model_input(model, tmp_path / "gray8.png")
    for name, image in {
        "16-bit PNG": tmp_path / "gray16.png",
        "16-bit array as opened": np.asarray(Image.open(tmp_path / "gray16.png")),
        "16-bit (H, W, 1)": gray16[..., None], "8-bit (H, W)": gray8, "8-bit (H, W, 1)": gray8[..., None],
        "float [0, 1]": gray8 / 255.0,
    }.items():
        np.testing.assert_allclose(_probabilities(model, image), gray, atol=1e-3, err_msg=name)
        assert np.abs(_model_input(model, image) - gray_input).max() <= 1, name

    # What clipping the 16-bit array to 255 (the old array path) did: another picture altogether,
    # so the checks above would see it.
    white = np.clip(gray16, 0, 255).astype(np.uint8)
    assert np.abs(_model_input(model, white) - gray_input).mean() > 50
