"""Could a human grade this photograph? Absolute image-quality measures of a fundus photograph.

Nothing here is fitted on training data: the bounds (``gate.gradability`` in
``parameters_referral.yml``, docs/grading.md, "Gradable?") say what a gradable fundus photograph is for
any camera, and are saved with the model. What is particular to the training photographs belongs
to the out-of-distribution check (:mod:`qsight_pipeline.inference.ood`).

The photograph is measured letterboxed to at most :data:`ANALYSIS_SIZE` px (never enlarged), so a
measure means the same for a 1,000 px and a 4,000 px photograph:

- the **fundus field**: the largest connected area whose red channel is above :data:`FIELD_LEVEL`
  (holes filled). ``field_fraction``: its share of the frame. ``field_side_height``: the height of
  the field at its left and right ends (the outer 3% of its width) as a share of its tallest
  column, the larger of the two sides: about 0.2 for a round field, whole or cut at top and
  bottom, and 1 for a lit area that runs past the frame's sides (a cropped field, a lit
  surround, a rectangular non-fundus picture). ``field_roundness``: intersection over union of
  the field with the disc of the field's width, cut at the field's top and bottom rows.
- **exposure**, on the luminance (ITU-R BT.601 weights) inside the field: ``brightness`` (mean,
  0-255), ``dark_fraction`` (share below :data:`DARK_LEVEL`: too dark to see detail) and
  ``burnt_out_fraction`` (share whose green channel, which carries the contrast of vessels and
  lesions, is clipped at :data:`BURNT_OUT_LEVEL` or above).
- **illumination**: ``illumination_evenness``, the mean luminance of the darker half of the
  field over that of the brighter half (left/right and top/bottom halves about the field's
  centroid; the smaller ratio).
- **focus**: ``blur``, the no-reference blur effect of Crété-Roffet et al. (2007) inside the
  field, its rim left out: 0 sharp, 1 fully blurred (how little of the picture's own edge
  strength a further blur removes). NaN for a field under :data:`MIN_FOCUS_WIDTH` px wide.
- **noise**: ``noise``, the standard deviation of sensor noise in grey levels, estimated inside
  the field with Immerkær's (1996) fast noise-variance estimator.
- **resolution**: ``resolution``, the width of the fundus field in the original photograph's
  pixels (NaN when the original size is unknown; then its bound is not applied).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from qsight_pipeline.data.image_cache import load_array, load_image

# Photographs are measured with their longer side at most this many pixels.
ANALYSIS_SIZE = 512
# Red level (0-255) above which a pixel is lit: the dark surround of a fundus camera is below it.
FIELD_LEVEL = 20
# Luminance (0-255) below which a part of the field is too dark to show detail.
DARK_LEVEL = 15
# Green level (0-255) at or above which a pixel is burnt out.
BURNT_OUT_LEVEL = 250
# A field smaller than this share of the frame is not measured further.
MIN_FIELD_SHARE = 0.002
# Focus is judged only on a field at least this many pixels wide: in a smaller picture every
# photograph looks blurred to the measure (such a photograph fails the resolution bound anyway).
MIN_FOCUS_WIDTH = 96
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# The blur effect's re-blurring window (Crété-Roffet et al. 2007; scikit-image's default).
BLUR_WINDOW = 11

# Each measure: the sides a bound may have, and the unit its violations are counted in (so one
# gate score, the largest violation in units, ranks photographs across measures).
MEASURES: dict[str, dict[str, Any]] = {
    "field_fraction": {"sides": ("min",), "unit": 0.05},
    "field_side_height": {"sides": ("max",), "unit": 0.1},
    "field_roundness": {"sides": ("min",), "unit": 0.05},
    "brightness": {"sides": ("min", "max"), "unit": 10.0},
    "dark_fraction": {"sides": ("max",), "unit": 0.1},
    "burnt_out_fraction": {"sides": ("max",), "unit": 0.1},
    "illumination_evenness": {"sides": ("min",), "unit": 0.1},
    "blur": {"sides": ("max",), "unit": 0.1},
    "noise": {"sides": ("max",), "unit": 3.0},
    "resolution": {"sides": ("min",), "unit": 50.0},
}
# What a failed bound means, in the words the rows and the report use; the measured value and
# the bound follow in brackets.
REASONS: dict[tuple[str, str], str] = {
    ("field_fraction", "min"): "no fundus field found (the largest lit area is too small a part of the frame)",
    ("field_side_height", "max"): (
        "no round field edge at the left and right (the field is cropped at the sides, the "
        "surround is lit, or it is not a fundus photograph)"
    ),
    ("field_roundness", "min"): "the lit area is not a round fundus field",
    ("brightness", "min"): "underexposed (the field is too dark)",
    ("brightness", "max"): "overexposed (the field is too bright)",
    ("dark_fraction", "max"): "underexposed in part (too much of the field is too dark to see)",
    ("burnt_out_fraction", "max"): "overexposed (too much of the field is burnt out)",
    ("illumination_evenness", "min"): "unevenly lit (one half of the field is much darker than the other)",
    ("blur", "max"): "out of focus (blurred)",
    ("noise", "max"): "noisy (grain hides fine detail)",
    ("resolution", "min"): "resolution too low (too few pixels across the fundus field)",
}


# --- the picture that is measured ---------------------------------------------------------------


def original_size(image: Any) -> tuple[int, int] | None:
    """``(width, height)`` of a file (from its header) or an array, None if unknown."""
    if isinstance(image, np.ndarray):
        return (int(image.shape[1]), int(image.shape[0])) if image.ndim >= 2 else None
    try:
        with Image.open(image) as picture:
            return picture.size
    except Exception:  # noqa: BLE001 - the decoder reports unreadable files itself
        return None


def analysis_size(original: Sequence[int] | None) -> int:
    """The side a photograph of ``original`` ``(width, height)`` is measured at."""
    return ANALYSIS_SIZE if not original else max(1, min(ANALYSIS_SIZE, max(original)))


def gradability_picture(image: Any) -> tuple[np.ndarray, tuple[int, int] | None]:
    """A file or an array, decoded as the model's pictures are (letterboxed) at
    :func:`analysis_size`, and its original ``(width, height)``.

    Raises:
        ImageDecodeError / ImageArrayError: as :func:`~qsight_pipeline.inference.predict.decode`.
    """
    original = original_size(image)
    size = analysis_size(original)
    picture = load_array(image, size) if isinstance(image, np.ndarray) else load_image(image, size)
    return picture, original


def photograph_measures(image: Any) -> dict[str, float]:
    """:func:`quality_measures` of a file or an array, measured at :func:`analysis_size`."""
    return quality_measures(*gradability_picture(image))


# --- the measures -------------------------------------------------------------------------------


def quality_measures(picture: np.ndarray, original: Sequence[int] | None = None) -> dict[str, float]:
    """The gradability measures (module docstring) of one uint8 ``(S, S, 3)`` picture.

    ``picture`` larger than :data:`ANALYSIS_SIZE` is reduced first. ``original`` is the
    ``(width, height)`` of the photograph the picture was letterboxed from; without it
    ``resolution`` is NaN. Measures of a picture without a fundus field are NaN but
    ``field_fraction``.
    """
    array = np.asarray(picture)
    if array.shape[0] > ANALYSIS_SIZE:
        array = load_array(array, ANALYSIS_SIZE)
    field = fundus_field(array)
    nan = float("nan")
    measures = dict.fromkeys(MEASURES, nan)
    measures["field_fraction"] = float(field.mean())
    if field.sum() < max(4, MIN_FIELD_SHARE * field.size):
        return measures
    gray = array.astype(np.float32) @ LUMA
    measures.update(field_geometry(field))
    measures.update(exposure(array, gray, field))
    inner = _interior(field)
    width = measures.pop("field_width")
    if width >= MIN_FOCUS_WIDTH:
        measures["blur"] = blur_effect(gray, inner)
    measures["noise"] = noise_sigma(gray, inner)
    if original:
        measures["resolution"] = float(width * max(original) / array.shape[1])
    return {key: float(value) for key, value in measures.items()}


def fundus_field(array: np.ndarray) -> np.ndarray:
    """The largest connected lit area (red above :data:`FIELD_LEVEL`), its holes filled."""
    lit = array[..., 0] > FIELD_LEVEL
    labels, count = ndimage.label(lit)
    if count > 1:
        sizes = ndimage.sum_labels(lit, labels, np.arange(1, count + 1))
        lit = labels == 1 + int(np.argmax(sizes))
    return ndimage.binary_fill_holes(lit)


def field_geometry(field: np.ndarray) -> dict[str, float]:
    """``field_side_height``, ``field_roundness`` and ``field_width`` (pixels) of a field mask."""
    columns, rows = field.sum(axis=0), field.sum(axis=1)
    xs, ys = np.nonzero(columns)[0], np.nonzero(rows)[0]
    left, right, top, bottom = xs[0], xs[-1], ys[0], ys[-1]
    width = right - left + 1
    band = max(1, round(0.03 * width))
    tallest = float(columns.max())
    sides = (columns[left : left + band].mean(), columns[right - band + 1 : right + 1].mean())
    # The disc of the field's width, centred on the widest rows and cut at the field's top and
    # bottom: a camera's round field, whole or cut at top and bottom.
    widest = np.nonzero(rows >= 0.98 * rows.max())[0]
    centre_y, centre_x, radius = widest.mean(), (left + right) / 2.0, width / 2.0
    yy, xx = np.ogrid[: field.shape[0], : field.shape[1]]
    disc = ((yy - centre_y) ** 2 + (xx - centre_x) ** 2 <= radius**2) & (yy >= top) & (yy <= bottom)
    union = np.logical_or(field, disc).sum()
    return {
        "field_side_height": float(max(sides) / tallest),
        "field_roundness": float(np.logical_and(field, disc).sum() / union) if union else 0.0,
        "field_width": float(width),
    }


def exposure(array: np.ndarray, gray: np.ndarray, field: np.ndarray) -> dict[str, float]:
    """``brightness``, ``dark_fraction``, ``burnt_out_fraction``, ``illumination_evenness``."""
    inside = gray[field]
    rows, cols = np.nonzero(field)
    ratios = []
    for lower in (cols < cols.mean(), rows < rows.mean()):
        halves = [inside[lower], inside[~lower]]
        if min(len(h) for h in halves) == 0:
            continue
        means = [float(h.mean()) for h in halves]
        ratios.append(min(means) / max(max(means), 1e-6))
    return {
        "brightness": float(inside.mean()),
        "dark_fraction": float((inside < DARK_LEVEL).mean()),
        "burnt_out_fraction": float((array[..., 1][field] >= BURNT_OUT_LEVEL).mean()),
        "illumination_evenness": min(ratios) if ratios else 1.0,
    }


def _interior(field: np.ndarray) -> np.ndarray:
    """The field without its rim (3% of its width), where the field's own edge is not measured."""
    width = int(np.ptp(np.nonzero(field.sum(axis=0))[0])) + 1
    inner = ndimage.binary_erosion(field, iterations=max(2, round(0.03 * width)))
    return inner if inner.sum() >= 16 else field


def blur_effect(gray: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Crété-Roffet et al.'s (2007) blur effect of a grey picture, on the pixels in ``mask``.

    In each direction: the edge strength (absolute Sobel response) of the picture and of the
    picture re-blurred along that direction by a :data:`BLUR_WINDOW`-pixel mean; the blur is the
    share of the edge strength that the re-blurring does *not* remove. The larger of the two
    directions. A sharp picture loses most of its edge strength (near 0), a blurred one little
    (near 1). Equals ``skimage.measure.blur_effect`` on its cropped interior when ``mask`` is None.
    """
    image = np.asarray(gray, dtype=np.float64)
    mask = np.ones(image.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    values = []
    for axis in range(image.ndim):
        reblurred = ndimage.uniform_filter1d(image, BLUR_WINDOW, axis=axis)
        sharp = np.abs(ndimage.sobel(image, axis=axis))
        soft = np.abs(ndimage.sobel(reblurred, axis=axis))
        kept = np.maximum(0.0, sharp - soft)
        total = float(sharp[mask].sum())
        values.append(abs(total - float(kept[mask].sum())) / total if total > 0 else 1.0)
    return float(max(values))


def noise_sigma(gray: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Immerkær's (1996) estimate of the noise's standard deviation (grey levels) in ``mask``.

    The picture is filtered with the difference of two Laplacians, which cancels smooth image
    structure and keeps white noise (of variance 36 times the noise's); the mean absolute
    response times sqrt(pi / 2) / 6 is the noise's standard deviation.
    """
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    response = np.abs(ndimage.convolve(np.asarray(gray, dtype=np.float64), kernel, mode="reflect"))
    mask = np.ones(response.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return float(np.sqrt(np.pi / 2.0) * response[mask].mean() / 6.0) if mask.any() else float("nan")


# --- the bounds ---------------------------------------------------------------------------------


def bounds_from(limits: Mapping[str, float | None]) -> dict[str, dict[str, float | None]]:
    """``{measure: {"min", "max"}}`` from flat ``<measure>_min`` / ``<measure>_max`` keys."""
    bounds = {name: {"min": None, "max": None} for name in MEASURES}
    for key, value in limits.items():
        name, side = key.rsplit("_", 1)
        if name not in MEASURES or side not in MEASURES[name]["sides"]:
            known = ", ".join(f"{n}_{s}" for n, spec in MEASURES.items() for s in spec["sides"])
            raise KeyError(f"{key} is not a gradability bound; the bounds are: {known}")
        bounds[name][side] = None if value is None else float(value)
    return bounds


def check_gradability(measures: Mapping[str, float], gradability: Mapping[str, Any]) -> tuple[list[str], float]:
    """The reasons a photograph fails (empty when gradable) and its largest violation, in each
    measure's unit (> 0 fails; NaN measures are not judged)."""
    reasons: list[str] = []
    worst = -np.inf
    for name, bound in gradability["bounds"].items():
        value = measures.get(name)
        if value is None or not np.isfinite(value):
            continue
        unit = float(MEASURES.get(name, {}).get("unit") or 1.0)
        for side in ("min", "max"):
            limit = bound.get(side)
            if limit is None:
                continue
            excess = (limit - value) if side == "min" else (value - limit)
            worst = max(worst, excess / unit)
            if excess > 0:
                reason = REASONS.get((name, side), f"{name} {'below' if side == 'min' else 'above'} its bound")
                reasons.append(f"{reason} [{name} {value:.3g} {'<' if side == 'min' else '>'} {limit:.3g}]")
    return reasons, float(worst if np.isfinite(worst) else 0.0)
