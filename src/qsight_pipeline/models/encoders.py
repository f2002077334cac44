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
import sys
from pathlib import Path

import timm
from torch import nn

from qsight_pipeline.errors import UserError

logger = logging.getLogger(__name__)

# The guide's encoders: `--encoder-type vit|resnet`.
DEFAULT_ENCODER_NAMES: dict[str, str] = {"vit": "vit_base_patch16_224", "resnet": "resnet50"}


class EncoderError(UserError, ValueError):
    """An encoder setting that cannot be used (unknown type or timm name)."""


class EncoderWeightsError(UserError, RuntimeError):
    """Pretrained weights could not be obtained or did not fit the encoder."""


def resolve_encoder_name(encoder_type: str = "vit", encoder_name: str | None = None) -> str:
    """The timm name to build: ``encoder_name`` if given, else the default for ``encoder_type``."""
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


def create_encoder(
    encoder_type: str = "vit",
    encoder_name: str | None = None,
    image_size: int = 224,
    pretrained: bool = True,
    pretrained_weights: str | Path | None = None,
) -> nn.Module:
    """Build a timm encoder that maps ``(B, 3, image_size, image_size)`` to ``(B, num_features)``.

    Args:
        encoder_type: ``vit`` or ``resnet``. Picks the default timm name and, for ``vit``,
            passes ``img_size=image_size`` so the patch grid and position embeddings fit.
        encoder_name: any timm model name; overrides the type's default.
        image_size: input side in pixels.
        pretrained: download ImageNet weights through timm.
        pretrained_weights: a local weights file (``.pth``/``.bin``/``.safetensors``, a plain state
            dict or one wrapped under ``state_dict``/``model``). It takes precedence over the
            download, whatever ``pretrained`` says, for machines without internet. timm adapts it
            as it does its own weights (classifier dropped, ViT position embeddings resized).

    Raises:
        EncoderError: unknown ``encoder_type`` or ``encoder_name``.
        EncoderWeightsError: the download failed, the file is missing, or the file does not fit
            the encoder. The message names ``model.pretrained`` and ``model.pretrained_weights``.
    """
    name = resolve_encoder_name(encoder_type, encoder_name)
    kwargs: dict = {"num_classes": 0}
    if encoder_type == "vit":
        kwargs["img_size"] = image_size

    if pretrained_weights:
        weights_path = Path(pretrained_weights).expanduser()
        if not weights_path.is_file():
            raise EncoderWeightsError(
                f"`model.pretrained_weights` points to {str(weights_path)!r}, which does not exist. "
                "Point it at a weights file for "
                f"{name!r}, or set `model.pretrained_weights: null` (and `model.pretrained: true` to "
                "download from timm, or `model.pretrained: false` for a random init)."
            )
        encoder = timm.create_model(name, pretrained=False, **kwargs)
        _load_weights_file(encoder, name, weights_path)
        logger.info("Encoder %s: weights loaded from %s", name, weights_path)
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


def _load_weights_file(encoder: nn.Module, name: str, weights_path: Path) -> None:
    """Load a local weights file into ``encoder`` the way timm loads its own weights, strictly.

    timm's loader adapts the file (unwraps ``state_dict``/``model``, drops the classifier, resizes
    ViT position embeddings through the family's ``checkpoint_filter_fn``) but loads non-strictly
    once the classifier is removed, so a file for another architecture would load *nothing* with
    only a log line. We capture what the load matched and refuse anything but a full fit.
    """
    family = sys.modules[timm.models.model_entrypoint(name).__module__]
    cfg = dict(encoder.pretrained_cfg)
    cfg.update(file=str(weights_path), hf_hub_id=None, url=None)
    classifiers = cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    seen: dict[str, list[str]] = {}

    def record(module: nn.Module, keys) -> None:
        seen["missing"] = list(keys.missing_keys)
        seen["unexpected"] = list(keys.unexpected_keys)

    handle = encoder.register_load_state_dict_post_hook(record)
    try:
        timm.models.load_pretrained(
            encoder,
            pretrained_cfg=cfg,
            num_classes=0,
            filter_fn=getattr(family, "checkpoint_filter_fn", None),
            strict=False,
        )
    except Exception as error:  # shape mismatches, unreadable files, pickles of other things
        raise EncoderWeightsError(
            _mismatch(name, weights_path, f"{type(error).__name__}: {error}")
        ) from error
    finally:
        handle.remove()
    unexpected = [
        key for key in seen.get("unexpected", []) if key.split(".", 1)[0] not in classifiers
    ]
    missing = seen.get("missing", [])
    if missing or unexpected:
        detail = (
            f"{len(missing)} encoder weight(s) missing from the file (e.g. {', '.join(missing[:3])}); "
            f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})"
        )
        raise EncoderWeightsError(_mismatch(name, weights_path, detail))


def _mismatch(name: str, weights_path: Path, detail: str) -> str:
    return (
        f"`model.pretrained_weights` file {str(weights_path)!r} does not fit encoder {name!r} "
        f"({detail}). Use weights saved from the same timm architecture (check "
        "`model.encoder_type` / `model.encoder_name`), or set `model.pretrained_weights: null`."
    )
