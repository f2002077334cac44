"""What the page does with an upload before grading it: the project's pixel limit, then decoding.

The page is a door like ``predict`` and the API, so it refuses the same photographs with the same
message: ``ingestion.max_pixels`` as the project's configuration sets it (``conf/`` of the folder
the page was started in, ``conf/base`` and ``conf/local`` merged as ``kedro run`` merges them),
else the default, checked from the file's header before anything is decoded.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import ImageOps

from qsight_pipeline.config import IngestionParams
from qsight_pipeline.data.image_cache import (
    DECODE_ERRORS,
    DEFAULT_MAX_PIXELS,
    ImageTooLargeError,
    open_image,
    to_rgb8,
)
from qsight_pipeline.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS


def upload_limit(project: Path) -> tuple[int, str]:
    """``(max_pixels, where it comes from)``: ``ingestion.max_pixels`` of ``project``'s
    configuration, or the default when there is none or it cannot be read."""
    conf = project / "conf"
    if not (conf / "base").is_dir():
        return DEFAULT_MAX_PIXELS, f"the default ingestion.max_pixels: no project conf/ in {project}"
    try:
        parameters = CONFIG_LOADER_CLASS(str(conf), **CONFIG_LOADER_ARGS)["parameters"]
        limit = IngestionParams.model_validate(parameters.get("ingestion") or {}).max_pixels
    except Exception as error:  # noqa: BLE001 - a broken conf must not stop the page
        return DEFAULT_MAX_PIXELS, (
            f"the default ingestion.max_pixels: {conf} could not be read "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        )
    return limit, f"ingestion.max_pixels in {conf}"


def decode_upload(data: bytes, max_pixels: int | None) -> np.ndarray:
    """The upload as an 8-bit RGB array, decoded as ingestion decodes a file (EXIF orientation,
    16-bit scaled, alpha onto black), after the header passed ``max_pixels``; ValueError with a
    readable reason when it is too large or not an image."""
    if not data:
        raise ValueError("the file is empty (0 bytes)")
    try:
        with open_image(io.BytesIO(data), max_pixels) as image:
            return np.asarray(to_rgb8(ImageOps.exif_transpose(image)))
    except ImageTooLargeError as error:
        raise ValueError(str(error)) from None
    except DECODE_ERRORS as error:
        reason = "unknown format" if type(error).__name__ == "UnidentifiedImageError" else str(error)
        raise ValueError(f"it is not a readable JPEG or PNG image ({reason})") from None
