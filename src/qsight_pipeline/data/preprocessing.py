"""What the one pixel path does to a photograph after decoding it: :class:`Preprocessing`.

A photograph becomes the model's input in two steps, the same for every entry point:
:func:`qsight_pipeline.data.image_cache.picture` (decode -> 8-bit RGB -> letterbox resize and
centre crop: the uint8 picture the image cache holds) and
:func:`qsight_pipeline.data.torch_data.normalise` (scale to [0, 1], subtract ``mean``, divide by
``std``); :func:`qsight_pipeline.data.torch_data.model_input` is both in one call.

The settings come from the encoder: timm's data configuration for its weights
(:func:`from_encoder`), unless ``model.preprocessing`` overrides them, with the side from
``run.image_size`` (the encoder's own when null). They are saved in the model config, the
checkpoint and ``model_info.json``, and every entry point reads them from there.

This module imports neither torch nor Pillow.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from qsight_pipeline.errors import ArtifactError, ParameterError
from qsight_pipeline.files import lineage

logger = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# Pillow's resampling filters by timm's names for them.
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")
RESIZES = ("letterbox",)
CROP_MODES = ("center",)
LEGACY_SOURCE = (
    "saved before the preprocessing came from the encoder: ImageNet mean and std, bicubic "
    "letterbox, no crop"
)
# The keys a model saved before interpolation and crop were recorded lacks, at the values its
# training used.
_LEGACY = {"interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center", "source": LEGACY_SOURCE}
# What the uint8 picture (and so the image cache) depends on; mean and std apply after it.
PICTURE_KEYS = ("image_size", "resize", "interpolation", "crop_pct", "crop_mode")
# The key of an image cache's lineage record that holds its picture settings.
PICTURES_KEY = "pictures"
_REBUILD = "Rebuild the model with `kedro run` (or `save_model` for one trained from Python)."


class PreprocessingError(ArtifactError):
    """A saved preprocessing this version cannot apply; the message names the rebuild command."""


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded photograph becomes the model's input.

    Attributes:
        image_size: the side of the square picture.
        mean, std: per RGB channel, applied to values scaled to [0, 1].
        interpolation: the resampling filter (timm's name: bicubic, bilinear, ...).
        crop_pct: the share of the side kept by the centre crop: the photograph is letterboxed
            at ``floor(image_size / crop_pct)`` and the centre ``image_size`` square kept (timm's eval
            crop); 1.0 keeps the whole frame.
        crop_mode: ``center`` (the only one applied).
        resize: ``letterbox``: the longer side to the size, centred on black, so the round
            fundus field stays round.
        source: where the values came from, in words.
    """

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    crop_mode: str = "center"
    resize: str = "letterbox"
    source: str = "default: ImageNet mean and std, bicubic letterbox, no crop"

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", int(self.image_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        problem = _problem(self)
        if problem:
            raise ValueError(problem)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists for ``mean`` and ``std``), as saved in ``model_info.json``."""
        saved = asdict(self)
        return {**saved, "mean": list(self.mean), "std": list(self.std)}

    def picture_settings(self) -> dict[str, Any]:
        """What the uint8 picture depends on (recorded beside an image cache)."""
        return {key: getattr(self, key) for key in PICTURE_KEYS}

    def recipe(self) -> list[str]:
        """The steps in words, for someone who reproduces them without this package."""
        scaled = scaled_side(self.image_size, self.crop_pct)
        steps = [
            "Decode the file to 8-bit RGB: apply the EXIF orientation, scale 16-bit samples to 8 "
            "bits (round(v * 255 / 65535) for grayscale, the high byte for colour), composite "
            "transparency onto black.",
            f"Scale the photograph with {self.interpolation} interpolation (Pillow, antialiased) "
            f"so that its longer side is {scaled} px, keeping its aspect ratio, and centre it on "
            f"a black {scaled} x {scaled} square (offset (side - scaled size) // 2).",
        ]
        if scaled != self.image_size:
            steps.append(
                f"Keep the centre {self.image_size} x {self.image_size} square (crop_pct "
                f"{self.crop_pct:g}; offset round(({scaled} - {self.image_size}) / 2), halves to even)."
            )
        steps.append(
            f"Divide by 255, subtract mean {list(self.mean)} and divide by std {list(self.std)} "
            "per RGB channel; the input is float32 (batch, 3, height, width)."
        )
        return steps


def scaled_side(size: int, crop_pct: float) -> int:
    """The side a photograph is letterboxed at before the centre crop keeps ``size``: timm's
    ``floor(size / crop_pct)``."""
    return max(size, math.floor(size / crop_pct))


def _problem(settings: Preprocessing) -> str | None:
    if settings.image_size < 1:
        return f"image_size must be positive, got {settings.image_size}"
    if len(settings.mean) != 3 or len(settings.std) != 3:
        return f"mean and std need 3 values (R, G, B), got {list(settings.mean)} and {list(settings.std)}"
    if not all(math.isfinite(v) and v > 0 for v in settings.std):
        return f"std must be positive, got {list(settings.std)}"
    if not 0 < settings.crop_pct <= 1:
        return f"crop_pct must be in (0, 1], got {settings.crop_pct}"
    for key, allowed in (("interpolation", INTERPOLATIONS), ("resize", RESIZES), ("crop_mode", CROP_MODES)):
        if getattr(settings, key) not in allowed:
            return f"{key} must be one of {', '.join(allowed)}, got {getattr(settings, key)!r}"
    return None


def from_saved(saved: Preprocessing | Mapping[str, Any] | int | None, image_size: int | None = None) -> Preprocessing:
    """The preprocessing a model or an image cache recorded.

    ``saved`` is a :class:`Preprocessing`, its dict, an ``int`` (a side: the letterbox with
    ImageNet statistics of before) or None (then ``image_size`` gives the side). A dict saved
    before interpolation and crop were recorded is read as what its training did: bicubic
    letterbox, no crop.

    Raises:
        PreprocessingError: a recorded value this version cannot apply (an unknown resize, say).
    """
    if isinstance(saved, Preprocessing):
        return saved
    if saved is None or isinstance(saved, int):
        side = saved if isinstance(saved, int) else image_size
        if side is None:
            raise PreprocessingError(f"The preprocessing has no image size. {_REBUILD}")
        return Preprocessing(image_size=int(side), source=LEGACY_SOURCE)
    values = {**_LEGACY, **dict(saved)} if "interpolation" not in saved else dict(saved)
    unknown = sorted(set(values) - set(Preprocessing.__dataclass_fields__))
    try:
        if unknown:
            raise ValueError(f"unknown keys {', '.join(unknown)}")
        return Preprocessing(**values)
    except (TypeError, ValueError) as error:
        raise PreprocessingError(
            f"The saved preprocessing {dict(saved)} cannot be applied by this version ({error}). "
            f"{_REBUILD}"
        ) from None


def from_encoder(
    data_config: Mapping[str, Any],
    name: str,
    image_size: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Preprocessing:
    """The encoder's own preprocessing: timm's data config (``data_config``, from
    ``models.encoders.encoder_data_config``: mean, std, input size, interpolation, crop),
    with the ``model.preprocessing`` ``overrides`` that are set and the side ``image_size``
    (``run.image_size``; the encoder's own input size when None)."""
    own = int(data_config["input_size"][-1])
    interpolation = str(data_config.get("interpolation") or "bicubic")
    if interpolation not in INTERPOLATIONS:  # timm's "random" is a training-time choice
        interpolation = "bicubic"
    if data_config.get("crop_mode", "center") not in CROP_MODES:
        logger.info("%s: timm's crop mode %r is applied as a centre crop of the letterboxed "
                    "photograph.", name, data_config["crop_mode"])
    values: dict[str, Any] = {
        "mean": tuple(data_config["mean"]), "std": tuple(data_config["std"]),
        "interpolation": interpolation, "crop_pct": float(data_config.get("crop_pct") or 1.0),
    }
    chosen = {key: value for key, value in dict(overrides or {}).items() if value is not None}
    values.update(chosen)
    source = f"timm data config of {data_config.get('weights') or name}"
    if chosen:
        source += f"; model.preprocessing sets {', '.join(sorted(chosen))}"
    if image_size is not None and int(image_size) != own:
        source += f"; run.image_size {int(image_size)} (the weights' own: {own})"
    try:
        return Preprocessing(image_size=own if image_size is None else int(image_size),
                             source=source, **values)
    except ValueError as error:
        raise ParameterError(f"model.preprocessing: {error}") from None


def check_pictures(caches: Mapping[str, Any], preprocessing: Preprocessing | Mapping[str, Any]) -> None:
    """Every image cache (``{split: array}``) must hold the pictures ``preprocessing`` makes, as
    its lineage record says (a cache written before the record held them was a bicubic
    letterbox at its side, with no crop).

    Raises:
        PreprocessingError: a cache was made another way; the message names both ways and the
            command that rebuilds the cache.
    """
    wanted = from_saved(preprocessing).picture_settings()
    for split, cache in caches.items():
        found = (lineage.of(cache) or {}).get(PICTURES_KEY) or from_saved(int(cache.shape[1])).picture_settings()
        differ = [f"{key} {found.get(key)!r} (the model's: {wanted[key]!r})" for key in PICTURE_KEYS
                  if found.get(key) != wanted[key]]
        if differ:
            raise PreprocessingError(
                f"image_cache_{split} was decoded another way than the model's preprocessing: "
                f"{'; '.join(differ)}. The model's comes from its encoder (model.encoder_name, "
                "model.preprocessing) and run.image_size; rebuild the caches with `kedro run "
                "--pipelines ingestion`, or set those back to what the caches were made with."
            )
