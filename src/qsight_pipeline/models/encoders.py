"""Image encoders, made by timm and nothing else.

``create_encoder`` returns a timm model with its classifier removed (``num_classes=0``), so calling
it gives pooled features of size ``encoder.num_features``. Where the weights come from is
configuration (``model.pretrained`` / ``model.pretrained_weights``), never model code, and a
failure to get them is an error that says which setting to change: a silently random encoder
would train, report poor numbers, and look like a modelling problem.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import timm
from torch import nn

from qsight_pipeline.config.model import DEFAULT_ENCODER_NAMES, ModelParams
from qsight_pipeline.config.run import RunSettings
from qsight_pipeline.errors import UserError
from qsight_pipeline.models.encoder_weights import EncoderWeightsError, load_weights_file

__all__ = ["EncoderError", "EncoderWeightsError", "create_encoder", "resolve_encoder_name"]

logger = logging.getLogger(__name__)

# The factory's defaults are the ``model`` block's (``config.ModelParams``), read, never repeated;
# the default timm name per encoder type is ``config.model.DEFAULT_ENCODER_NAMES``.
_MODEL = ModelParams.model_fields


class EncoderError(UserError, ValueError):
    """An encoder setting that cannot be used (unknown type or timm name)."""


def _block_default(encoder_type: str | None, encoder_name: str | None) -> tuple[str, str | None]:
    """No encoder type: the ``model`` block's default encoder (type, and name unless given)."""
    if encoder_type is None:
        return _MODEL["encoder_type"].default, encoder_name or _MODEL["encoder_name"].default
    return encoder_type, encoder_name


def resolve_encoder_name(encoder_type: str | None = None, encoder_name: str | None = None) -> str:
    """The timm name to build: ``encoder_name`` if given, else the default for ``encoder_type``
    (``config.model.DEFAULT_ENCODER_NAMES``). Both None: the ``model`` block's default encoder
    (``ModelParams``' ``encoder_type`` and ``encoder_name``)."""
    encoder_type, encoder_name = _block_default(encoder_type, encoder_name)
    if encoder_type not in DEFAULT_ENCODER_NAMES:
        raise EncoderError(
            f"`model.encoder_type` must be one of {', '.join(DEFAULT_ENCODER_NAMES)}, got {encoder_type!r}"
        )
    name = encoder_name or DEFAULT_ENCODER_NAMES[encoder_type]
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise EncoderError(f"`model.encoder_name` {name!r} is not a timm model name.{hint}")
    return name


def encoder_data_config(name: str) -> dict[str, Any]:
    """timm's data configuration for the weights of encoder ``name`` (a timm name, with a
    ``.tag`` to pick other weights), read from its ``pretrained_cfg`` without building the model
    or downloading anything: what ``timm.data.resolve_model_data_config`` gives for it
    (``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``), plus
    ``weights`` (``name.tag``) and ``fixed_input_size``."""
    pretrained_cfg = timm.models.get_pretrained_cfg(name)
    cfg = pretrained_cfg.to_dict() if pretrained_cfg is not None else {}
    config = dict(timm.data.resolve_data_config({}, pretrained_cfg=cfg))
    base = name.split(".", 1)[0]
    tag = getattr(pretrained_cfg, "tag", None)
    config["weights"] = f"{base}.{tag}" if tag else base
    config["fixed_input_size"] = bool(cfg.get("fixed_input_size", False))
    return config


def create_encoder(
    encoder_type: str | None = None, encoder_name: str | None = None,
    image_size: int | None = RunSettings.model_fields["image_size"].default,
    pretrained: bool = _MODEL["pretrained"].default,
    pretrained_weights: str | Path | None = _MODEL["pretrained_weights"].default,
) -> nn.Module:
    """Build a timm encoder that maps ``(B, 3, image_size, image_size)`` to ``(B, num_features)``.

    Args:
        encoder_type: ``vit`` or ``resnet``: the default timm name; ``img_size`` is passed for
            ``vit`` and any fixed-size encoder, so the patch grid and position embeddings fit.
            None: the ``model`` block's default encoder (every default here is the block's).
        encoder_name: any timm model name; overrides the type's default.
        image_size: input side in pixels; None (the default everywhere): the encoder's own.
        pretrained: download ImageNet weights through timm.
        pretrained_weights: a local weights file (``.pth``/``.bin``/``.safetensors``): timm's
            layout or RETFound's / RETFound-Green's published one (``models.encoder_weights``).
            It wins over the download, whatever ``pretrained`` says, for machines without
            internet; timm adapts it as its own weights (ViT position embeddings resized).

    Raises:
        EncoderError: unknown ``encoder_type`` or ``encoder_name``.
        EncoderWeightsError: the download failed, the file is missing, or the file does not fit
            the encoder. The message names ``model.pretrained`` and ``model.pretrained_weights``.
    """
    encoder_type, encoder_name = _block_default(encoder_type, encoder_name)
    name = resolve_encoder_name(encoder_type, encoder_name)
    data_config, kwargs = encoder_data_config(name), {"num_classes": 0}
    if encoder_type == "vit" or data_config["fixed_input_size"]:
        kwargs["img_size"] = image_size or int(data_config["input_size"][-1])

    if pretrained_weights:
        weights_path = Path(pretrained_weights).expanduser()
        if not weights_path.is_file():
            raise EncoderWeightsError(
                f"`model.pretrained_weights` points to {str(weights_path)!r}, which does not exist. "
                f"Point it at a weights file for {name!r}, or set `model.pretrained_weights: null` "
                "(and `model.pretrained: true` to download from timm, or `model.pretrained: false` "
                "for a random init)."
            )
        encoder = timm.create_model(name, pretrained=False, **kwargs)
        load_weights_file(encoder, name, weights_path)  # logs what it loaded and dropped
        return encoder

    if pretrained:
        try:
            encoder = timm.create_model(name, pretrained=True, **kwargs)
        except Exception as error:  # network errors come as OSError, URLError, HF hub errors, ...
            raise EncoderWeightsError(
                f"Could not download pretrained weights for encoder {name!r} "
                f"({type(error).__name__}: {error}). This machine may have no internet access. "
                "Either set `model.pretrained_weights` to a local weights file for this encoder, "
                "or set `model.pretrained: false` to train from a random init (much weaker on real "
                "data), e.g. `kedro run --params model.pretrained=false`."
            ) from error
        logger.info("Encoder %s: ImageNet weights loaded through timm", name)
        return encoder

    logger.info("Encoder %s: random init (model.pretrained is false)", name)
    return timm.create_model(name, pretrained=False, **kwargs)
