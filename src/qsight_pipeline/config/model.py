"""The ``model`` and ``augmentation`` blocks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from qsight_pipeline.config.base import ParamsBlock


class PreprocessingParams(ParamsBlock):
    """``model.preprocessing``: the one place to override the encoder's own preprocessing.

    Each key left null is the encoder's (timm's data config for its weights); the side is
    ``run.image_size`` (null: the encoder's own). docs/your-own-data.md, "One pixel path".
    """

    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: Literal["bicubic", "bilinear", "nearest", "lanczos", "box", "hamming"] | None = None
    # The share of the letterboxed photograph's side kept by the centre crop; 1.0 keeps it all.
    crop_pct: float | None = Field(None, gt=0, le=1)

    @field_validator("mean", "std")
    @classmethod
    def _three_channels(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and len(value) != 3:
            raise ValueError(f"needs 3 values (R, G, B), got {value}")
        return value

    @field_validator("std")
    @classmethod
    def _positive(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not all(v > 0 for v in value):
            raise ValueError(f"must be positive, got {value}")
        return value


# The timm model an encoder type builds when ``model.encoder_name`` is null (the guide's encoders,
# ``--encoder-type vit|resnet``); ``models.encoders`` resolves names with it.
DEFAULT_ENCODER_NAMES: dict[str, str] = {"vit": "vit_base_patch16_224", "resnet": "resnet50"}


class ModelParams(ParamsBlock):
    """The hybrid model's classical parts; the input size is the run-wide ``image_size``."""

    # The keys of DEFAULT_ENCODER_NAMES (a test keeps the two equal).
    encoder_type: Literal["vit", "resnet"] = "resnet"
    encoder_name: str | None = "test_resnet"
    pretrained: bool = False
    pretrained_weights: str | None = None
    compressed_dim: int = Field(64, ge=1)
    head_hidden_dim: int = Field(128, ge=1)
    gate_hidden_dim: int = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    # Never train the encoder: each picture is embedded once and the rest trains from the
    # embedding table (docs/your-own-data.md, "A frozen encoder runs once per image").
    freeze_encoder: bool = False
    preprocessing: PreprocessingParams = Field(default_factory=PreprocessingParams)


class AugmentationParams(ParamsBlock):
    """Label-preserving augmentation of training images (flips, small rotations, colour jitter)."""

    enabled: bool = True
    horizontal_flip: float = Field(0.5, ge=0, le=1)
    vertical_flip: float = Field(0.5, ge=0, le=1)
    rotation_degrees: float = Field(15.0, ge=0, le=180)
    brightness: float = Field(0.1, ge=0)
    contrast: float = Field(0.1, ge=0)
    saturation: float = Field(0.05, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)
    # Run the random augmentation per sample on whole batches on the training device (kornia)
    # instead of per image in the loader: what a large GPU needs to stay busy.
    on_device: bool = False
