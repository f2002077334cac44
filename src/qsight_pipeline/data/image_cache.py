"""Decode every image once into a uint8 array that training reads instead of JPEG/PNG files.

This is the first half of the one pixel path (docs/your-own-data.md, "One pixel path"): :func:`picture` turns a
file or an in-memory array into the uint8 picture the model sees before normalisation. Every
format and bit depth is decoded in full (EXIF orientation applied, 16-bit scaled, transparency
composited onto black: :func:`decode_image`, :func:`image_from_array`), then scaled with the
model's interpolation so its longer side fits, centred on a black square so the round fundus
field stays round, and centre-cropped (:func:`letterbox`). Ingestion, training, ``predict``, the
Python API and the page all call it, so a photograph gives the same pixels whether it arrives as
a JPEG, a PNG or the array of its decoded pixels. (JPEGs were once decoded at reduced scale with
Pillow's ``draft``; that changed the pixels, and grades, by format, so it is gone: see
``benchmarks/ingestion.py`` for what it cost.)
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from qsight_pipeline.config import IngestionParams
from qsight_pipeline.data.preprocessing import Preprocessing, from_saved, scaled_side
from qsight_pipeline.errors import UserError

logger = logging.getLogger(__name__)

# Errors Pillow raises for files that are not images, are truncated or are corrupt.
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)

# Caches larger than this are built in an unlinked temporary file instead of in memory, so that
# ingesting the full Kaggle set (35k images at 224 px is ~5 GB) does not need that much RAM. The
# limit is per split and small: with 512 MiB the val and test caches of 30,000 images (220 MB
# each at 128 px) stayed in process memory and ingestion's peak grew with the data
# (benchmarks/README.md, "Scaling with the data"); file pages are the kernel's to reclaim.
_IN_MEMORY_LIMIT_BYTES = 64 * 1024**2


# Refuse images larger than this before decoding them: ``ingestion.max_pixels``'s default
# (``config.IngestionParams``, 50 MP, well above any fundus camera; a 33 KB PNG can otherwise
# claim 12,000 x 12,000 pixels).
DEFAULT_MAX_PIXELS: int = IngestionParams.model_fields["max_pixels"].default
# That limit decides (open_image), at every size: Pillow's warning from 89 megapixels up would
# only repeat a refusal, or contradict an ingestion.max_pixels raised on purpose.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Pillow's resampling filters by timm's names (data.preprocessing.INTERPOLATIONS).
_RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}


class ImageDecodeError(UserError, ValueError):
    """An image file could not be read; the message names the file and the reason."""


class ImageArrayError(UserError, ValueError):
    """An in-memory array is not an image the decoder accepts (dtype, shape or value range)."""


class ImageTooLargeError(ValueError):
    """An image's header claims more pixels than ``ingestion.max_pixels``."""


def load_image(
    path: str | os.PathLike, size: int, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode ``path`` into a uint8 RGB array of shape ``(size, size, 3)``: :func:`picture` with
    a bicubic letterbox and no crop (what the gradability measures and old models use).

    Raises:
        ImageDecodeError: the file is missing, not an image, too large, truncated or corrupt.
    """
    return letterbox(decode_image(path, max_pixels), size)


def decode_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The whole photograph in ``path`` as an upright 8-bit RGB Pillow image.

    The EXIF orientation is applied, high-bit-depth pixels are scaled (not clipped) to 8 bits,
    transparency is composited onto black (the canvas colour) and CMYK, palette and grayscale
    images become RGB. Every pixel is decoded, JPEG included, so the result equals what
    :func:`image_from_array` makes of the decoded pixels. An image with more than ``max_pixels``
    pixels is refused from its header, before anything is decoded.

    Raises:
        ImageDecodeError: the file is missing, not an image, too large, truncated or corrupt.
    """
    path = Path(path)
    try:
        with open_image(path, max_pixels) as image:
            image.load()
            # In place: no copy of a whole photograph (3 MB at 1024 px) when it is already upright.
            ImageOps.exif_transpose(image, in_place=True)
            return to_rgb8(image)
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: file not found") from None
    except ImageTooLargeError as error:
        raise ImageDecodeError(f"{path}: {error}") from None
    except DECODE_ERRORS as error:
        raise ImageDecodeError(f"{path}: {type(error).__name__}: {error}") from None


def picture(
    source: str | os.PathLike | np.ndarray,
    preprocessing: Preprocessing | int,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """A file path or an array -> the uint8 RGB ``(S, S, 3)`` picture the model normalises.

    Decoding (:func:`decode_image` for a file, :func:`image_from_array` for an array), then
    :func:`letterbox` with the ``preprocessing``'s side, interpolation and crop (an ``int`` is a
    side, with the bicubic letterbox and no crop). A file and the array of its decoded pixels
    give the same picture.

    Raises:
        ImageDecodeError: a file that is empty, missing, not an image, truncated or corrupt.
        ImageArrayError: an array whose dtype, shape or range is not an image's.
    """
    settings = from_saved(preprocessing)
    if isinstance(source, np.ndarray):
        image = to_rgb8(image_from_array(source))
    else:
        image = decode_image(source, max_pixels)
    return letterbox(image, settings.image_size, settings.interpolation, settings.crop_pct)


def letterbox(
    image: Image.Image, size: int, interpolation: str = "bicubic", crop_pct: float = 1.0
) -> np.ndarray:
    """An 8-bit RGB picture scaled (antialiased, with ``interpolation``) so its longer side is
    ``floor(size / crop_pct)``, centred on a black square of that side, of which the centre
    ``size`` square is kept (all of it when ``crop_pct`` is 1). For a square photograph this is
    timm's eval transform (resize to ``floor(size / crop_pct)``, centre crop ``size``)."""
    scaled = scaled_side(size, crop_pct)
    width, height = image.size
    scale = scaled / max(width, height)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    if image.size != target:
        image = image.resize(target, _RESAMPLING[interpolation], reducing_gap=None)
    canvas = np.zeros((scaled, scaled, 3), dtype=np.uint8)
    top, left = (scaled - target[1]) // 2, (scaled - target[0]) // 2
    canvas[top : top + target[1], left : left + target[0]] = np.asarray(image, dtype=np.uint8)
    if scaled == size:
        return canvas
    start = int(round((scaled - size) / 2.0))  # torchvision's CenterCrop, as timm crops
    return np.ascontiguousarray(canvas[start : start + size, start : start + size])


def load_array(array: np.ndarray, size: int) -> np.ndarray:
    """An in-memory photograph -> uint8 RGB ``(size, size, 3)``, exactly as :func:`load_image`
    decodes the file it came from (see :func:`image_from_array` for what is accepted).

    Raises:
        ImageArrayError: the dtype, shape or value range is not one of an image.
    """
    return letterbox(to_rgb8(image_from_array(array)), size)


def image_from_array(array: np.ndarray) -> Image.Image:
    """The Pillow image that a file with these pixels opens as, before :func:`to_rgb8`.

    Channels are RGB order (OpenCV's BGR must be converted by the caller, e.g.
    ``array[..., ::-1]``). Accepted:

    - shapes ``(H, W)`` and ``(H, W, 1)`` (grayscale), ``(H, W, 2)`` (grayscale + alpha),
      ``(H, W, 3)`` (RGB) and ``(H, W, 4)`` (RGBA; composited onto black like a PNG's alpha);
    - ``uint8``; ``uint16`` (grayscale scaled ``round(v * 255 / 65535)`` like a 16-bit PNG,
      colour keeping each sample's high byte like Pillow's 48/64-bit PNGs); floats in
      ``[0, 1]`` (scaled ``round(v * 255)``, like a float image in ``[0, 1]``).

    Raises:
        ImageArrayError: any other dtype or shape, an empty array, or floats outside ``[0, 1]``
            (NaN included).
    """
    array = check_image_array(array)
    if array.dtype == np.uint16:
        if array.ndim == 2:
            return Image.fromarray(array)  # mode I;16, which to_rgb8 scales by 65535
        array = (array >> 8).astype(np.uint8)  # what Pillow makes of a 48/64-bit PNG
    elif array.dtype != np.uint8:  # floats in [0, 1]
        array = np.rint(array.astype(np.float64) * 255.0).astype(np.uint8)
    return Image.fromarray(array)


def check_image_array(array: np.ndarray) -> np.ndarray:
    """``array`` as :func:`image_from_array` takes it ((H, W, 1) squeezed, contiguous).

    Raises:
        ImageArrayError: the dtype, shape or value range is not one of an image.
    """
    if not isinstance(array, np.ndarray):
        raise ImageArrayError(f"expected a NumPy array, got {type(array).__name__}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (2, 3, 4))):
        raise ImageArrayError(
            f"an array of shape {array.shape} is not an image: expected (H, W) or (H, W, 1) "
            "grayscale, (H, W, 3) RGB or (H, W, 4) RGBA"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageArrayError(f"an array of shape {array.shape} has no pixels")
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(np.min(array)), float(np.max(array))
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0.0 or high > 1.0:
            raise ImageArrayError(
                f"a float image must hold values in [0, 1]; this one ranges over [{low:g}, "
                f"{high:g}]. Divide 8-bit values by 255 (or pass the uint8 array itself)."
            )
    elif array.dtype not in (np.uint8, np.uint16):
        raise ImageArrayError(
            f"an image array of dtype {array.dtype} is not supported: pass uint8 (0-255), uint16 "
            "(0-65535) or floats in [0, 1]."
        )
    return np.ascontiguousarray(array)


@contextmanager
def open_image(source: str | os.PathLike | BinaryIO, max_pixels: int | None) -> Iterator[Image.Image]:
    """``Image.open(source)``, refused from its header when it claims more than ``max_pixels``.

    Every door (ingestion, ``predict``, the API, the page) opens files through this, so one limit
    and one message hold for every size: Pillow's own "decompression bomb" error for a header of
    over about 179 megapixels becomes the same :class:`ImageTooLargeError`.

    Raises:
        ImageTooLargeError: the header claims more than ``max_pixels`` pixels.
    """
    try:
        image = Image.open(source)
    except Image.DecompressionBombError as error:
        raise _too_large_for_pillow(error, max_pixels) from None
    with image:
        width, height = image.size
        _check_pixels(width * height, max_pixels, f"{width}x{height} = ")
        yield image


def _check_pixels(pixels: int, max_pixels: int | None, size: str = "") -> None:
    if max_pixels is not None and pixels > max_pixels:
        raise ImageTooLargeError(
            f"{size}{pixels:,} pixels is over ingestion.max_pixels ({max_pixels:,}); decoding it "
            f"would take about {pixels * 4 / 1e6:,.0f} MB. Resize the image, or raise "
            "ingestion.max_pixels if it is genuine."
        )


def _too_large_for_pillow(error: Exception, max_pixels: int | None) -> ImageTooLargeError:
    """Pillow refused the header at open (over ``2 * Image.MAX_IMAGE_PIXELS``): the project's
    message, with the pixel count Pillow's message gives."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    pixels = int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1
    try:
        _check_pixels(pixels, max_pixels)
    except ImageTooLargeError as too_large:
        return too_large
    # ingestion.max_pixels was raised (or unset) above what Pillow decodes at all.
    return ImageTooLargeError(
        f"{pixels:,} pixels is over Pillow's own limit ({2 * (Image.MAX_IMAGE_PIXELS or 0):,} "
        "pixels), which ingestion.max_pixels cannot raise. Resize the image."
    )


def to_rgb8(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, whatever its mode and bit depth (itself when it already is).

    Pillow's own ``convert("RGB")`` clips 16-bit and 32-bit grayscale at 255 (a 16-bit PNG comes
    out white), so those modes are rescaled through NumPy. 48/64-bit RGB(A) PNGs already open as
    8-bit RGB(A) holding each sample's high byte, which is the right scaling.
    """
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image).astype(np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        top = _full_scale(image.mode, values)
        gray = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _full_scale(mode: str, values: np.ndarray) -> float:
    """The value that maps to 255 for a grayscale image of ``mode``."""
    if mode.startswith("I;16"):
        return 65535.0
    high = float(values.max()) if values.size else 0.0
    if mode == "F" and high <= 1.0:
        return 1.0  # a float image in [0, 1]
    if high <= 255.0:
        return 255.0  # 8-bit data stored in a wide mode
    if high <= 65535.0:
        return 65535.0  # what a 16-bit PNG opens as in mode "I"
    return high  # anything wider: stretch to the image's own maximum


def default_workers() -> int:
    """Decoding threads: Pillow releases the GIL while decoding, so threads scale with cores."""
    return max(1, min(8, os.cpu_count() or 1))


def build_image_cache(
    paths: Sequence[str | os.PathLike],
    preprocessing: Preprocessing | int,
    workers: int | None = None,
    description: str = "decoding images",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, dict[int, str]]:
    """Decode ``paths`` into one uint8 array ``(len(paths), S, S, 3)`` in that order, each row
    the :func:`picture` of its file (``preprocessing``: the model's, or a side ``S``).

    Returns the array and ``{row: reason}`` for the images that failed to decode; their rows are
    left black. The caller decides whether a failure is fatal.
    """
    settings = from_saved(preprocessing)
    cache = allocate_cache(len(paths), settings.image_size)
    failures: dict[int, str] = {}

    def decode(row: int) -> tuple[int, str | None]:
        try:
            cache[row] = picture(paths[row], settings, max_pixels)
        except ImageDecodeError as error:
            return row, str(error)
        return row, None

    workers = workers or default_workers()
    rows = range(len(paths))
    progress = dict(total=len(paths), desc=description, unit="img", disable=None, leave=False)
    if workers == 1:
        results = (decode(row) for row in rows)
        iterator = tqdm(results, **progress)
    else:
        executor = ThreadPoolExecutor(max_workers=workers)
        iterator = tqdm(executor.map(decode, rows), **progress)
    try:
        for row, reason in iterator:
            if reason is not None:
                failures[row] = reason
    finally:
        if workers != 1:
            executor.shutdown()
    return cache, failures


def allocate_cache(count: int, size: int) -> np.ndarray:
    """A zeroed uint8 ``(count, size, size, 3)`` array, file-backed when it is large."""
    shape = (count, size, size, 3)
    if count * size * size * 3 <= _IN_MEMORY_LIMIT_BYTES:
        return np.zeros(shape, dtype=np.uint8)
    handle = tempfile.NamedTemporaryFile(prefix="qsight_cache_", suffix=".u8", delete=False)
    handle.close()
    try:
        array = np.memmap(handle.name, dtype=np.uint8, mode="w+", shape=shape)
    finally:
        # The mapping keeps the data alive; unlinking now means nothing is left behind.
        os.unlink(handle.name)
    logger.info("Building a %.1f GB image cache in a temporary file", array.nbytes / 1e9)
    return array


class UnreadableImagesError(UserError, ValueError):
    """Some images are missing or cannot be decoded, and the policy is to fail."""
