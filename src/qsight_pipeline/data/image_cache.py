"""Decode every image once into a uint8 array that training reads instead of JPEG/PNG files.

:func:`load_image` is the one way the project turns an image file into pixels: JPEGs are decoded
at reduced size (Pillow ``draft``, which lets libjpeg skip most of the work for large sources),
the picture is scaled so its longer side is ``size`` and centred on a black square, so the round
fundus field stays round. Prediction on new images uses the same function.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from qsight_pipeline.errors import UserError

logger = logging.getLogger(__name__)

# Errors Pillow raises for files that are not images, are truncated or are corrupt.
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)

# Caches larger than this are built in an unlinked temporary file instead of in memory, so that
# ingesting the full Kaggle set (35k images at 224 px is ~5 GB) does not need that much RAM.
_IN_MEMORY_LIMIT_BYTES = 512 * 1024**2


class ImageDecodeError(ValueError):
    """An image file could not be read; the message names the file and the reason."""


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode ``path`` into a uint8 RGB array of shape ``(size, size, 3)``.

    Raises:
        ImageDecodeError: the file is missing, not an image, truncated or corrupt.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            scale = size / max(width, height)
            target = (max(1, round(width * scale)), max(1, round(height * scale)))
            # For JPEG this picks the smallest DCT scale (1/2, 1/4, 1/8) still >= target; other
            # formats ignore it.
            image.draft("RGB", target)
            image = image.convert("RGB")
            if image.size != target:
                image = image.resize(target, Image.Resampling.BICUBIC, reducing_gap=None)
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: file not found") from None
    except DECODE_ERRORS as error:
        raise ImageDecodeError(f"{path}: {type(error).__name__}: {error}") from None
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - target[1]) // 2, (size - target[0]) // 2
    canvas[top : top + target[1], left : left + target[0]] = np.asarray(image, dtype=np.uint8)
    return canvas


def default_workers() -> int:
    """Decoding threads: Pillow releases the GIL while decoding, so threads scale with cores."""
    return max(1, min(8, os.cpu_count() or 1))


def build_image_cache(
    paths: Sequence[str | os.PathLike],
    size: int,
    workers: int | None = None,
    description: str = "decoding images",
) -> tuple[np.ndarray, dict[int, str]]:
    """Decode ``paths`` into one uint8 array ``(len(paths), size, size, 3)`` in that order.

    Returns the array and ``{row: reason}`` for the images that failed to decode; their rows are
    left black. The caller decides whether a failure is fatal.
    """
    cache = allocate_cache(len(paths), size)
    failures: dict[int, str] = {}

    def decode(row: int) -> tuple[int, str | None]:
        try:
            cache[row] = load_image(paths[row], size)
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
