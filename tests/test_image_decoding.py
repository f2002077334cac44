"""Every image mode decodes to the right 8-bit RGB pixels, upright, or is refused (load_image is
shared by ingestion and predict)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from qsight_pipeline.config import IngestionParams
from qsight_pipeline.data.image_cache import DEFAULT_MAX_PIXELS, ImageDecodeError, load_image

SIZE = 32
RAMP = np.tile(np.linspace(0, 255, SIZE).round().astype(np.uint8), (SIZE, 1))  # dark left, bright right
RGB = np.stack([RAMP, RAMP[:, ::-1], np.full_like(RAMP, 90)], axis=-1)


def png_48_bit(path, rgb16: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    height, width, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16_bit_grayscale_png_is_scaled_not_clipped_to_white(tmp_path):
    # The example: an 8-bit picture cast to uint16 and multiplied by 257.
    path = tmp_path / "gray16.png"
    Image.fromarray(RAMP.astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode == "I;16"
    pixels = load_image(path, SIZE)
    np.testing.assert_array_equal(pixels[..., 0], RAMP)
    assert (pixels == 255).mean() < 0.05


@pytest.mark.parametrize("mode", ["I;16B", "I", "F"])
def test_other_wide_grayscale_modes(tmp_path, mode):
    if mode == "I;16B":
        image = Image.frombytes(mode, (SIZE, SIZE), (RAMP.astype(">u2") * 257).tobytes())
    elif mode == "I":
        image = Image.fromarray(RAMP.astype(np.int32) * 257, mode="I")
    else:
        image = Image.fromarray(RAMP.astype(np.float32) / 255, mode="F")
    path = tmp_path / f"wide_{mode.replace(';', '')}.tiff"
    image.save(path)
    assert Image.open(path).mode == mode
    np.testing.assert_array_equal(load_image(path, SIZE)[..., 1], RAMP)


def test_16_bit_rgb_png(tmp_path):
    path = tmp_path / "rgb48.png"
    png_48_bit(path, RGB.astype(np.uint16) * 257)
    np.testing.assert_array_equal(load_image(path, SIZE), RGB)


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :10] = 255  # a white band on the stored image's left edge
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    pixels = load_image(path, 40)
    # Upright, the picture is 20 wide and 40 tall (centred) with the white band on top.
    assert pixels[:8, 12:28].mean() > 240 and pixels[-8:, 12:28].mean() < 15
    assert pixels[:, :8].max() == 0  # black padding left and right, not above and below


def test_cmyk_rgba_la_palette_and_grayscale(tmp_path):
    cases = {
        "cmyk.jpg": (Image.fromarray(RGB).convert("CMYK"), RGB, 2.0),
        "gray.png": (Image.fromarray(RAMP), np.repeat(RAMP[..., None], 3, -1), 0.0),
        "la.png": (Image.fromarray(RAMP).convert("LA"), np.repeat(RAMP[..., None], 3, -1), 0.0),
        "palette.png": (Image.fromarray(RGB).convert("P", colors=256), RGB, 16.0),
    }
    for name, (image, expected, tolerance) in cases.items():
        path = tmp_path / name
        image.save(path, **({"quality": 95} if name.endswith("jpg") else {}))
        difference = np.abs(load_image(path, SIZE).astype(int) - expected).mean()
        assert difference <= tolerance, (name, difference)


def test_transparent_pixels_become_the_black_background(tmp_path):
    rgba = np.dstack([np.full((SIZE, SIZE, 3), 200, np.uint8), np.full((SIZE, SIZE), 255, np.uint8)])
    rgba[: SIZE // 2, :, 3] = 0  # top half transparent (white underneath)
    rgba[: SIZE // 2, :, :3] = 255
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(path)
    pixels = load_image(path, SIZE)
    assert pixels[: SIZE // 2].max() == 0 and (pixels[SIZE // 2 :] == 200).all()


def test_an_oversized_image_is_refused_from_its_header(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("L", (3000, 2000)).save(path)  # 6 MP, a few KB on disk
    with pytest.raises(ImageDecodeError) as info:
        load_image(path, SIZE, max_pixels=5_000_000)
    assert "3000x2000" in str(info.value) and "ingestion.max_pixels" in str(info.value)
    assert load_image(path, SIZE, max_pixels=None).shape == (SIZE, SIZE, 3)


def test_max_pixels_setting_is_checked():
    assert IngestionParams().max_pixels == DEFAULT_MAX_PIXELS == 50_000_000
    with pytest.raises(ValueError, match="max_pixels"):
        IngestionParams(max_pixels=0)
