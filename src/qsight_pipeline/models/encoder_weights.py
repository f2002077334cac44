"""A local encoder weights file, in timm's layout or a retinal foundation model's published one.

``model.pretrained_weights`` names the file. Besides a plain timm state dict (or one wrapped under
``state_dict`` / ``model``), two published layouts load as they are downloaded:

- **RETFound** (github.com/rmaphoh/RETFound_MAE): an MAE checkpoint of a ViT-L/16, a dict whose
  ``model`` entry holds the MAE model with MAE's names. Its encoder names are timm's
  (``vit_large_patch16_224``); the MAE decoder (``decoder_*``) and ``mask_token`` belong to the
  pretraining and are dropped. RETFound's DINOv2 checkpoints (``teacher`` entry, ``backbone.``
  prefix) go through timm's own DINOv2 conversion.
- **RETFound-Green** (github.com/justinengelmann/RETFound_Green): a plain state dict of timm's
  ``vit_small_patch14_reg4_dinov2`` built at 392 px with ``num_classes=0``.

Whatever the layout, the encoder must be filled completely: a file that leaves encoder weights
missing, holds keys the encoder does not know or tensors of another shape is refused, in one line
that gives the count and the first names of each. What was dropped is said in one line too, when
the model is built, before any training. The file is read with ``weights_only=True`` (safetensors
as they are): tensors and plain data only, never code.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file
from torch import nn

from qsight_pipeline.errors import UserError
from qsight_pipeline.files.safe_files import CorruptArtifactError, safe_torch_load

logger = logging.getLogger(__name__)

# Where a checkpoint keeps its weights, tried in this order (MAE/timm: model, DINO: teacher).
WRAPPER_KEYS = ("state_dict", "model", "teacher")
# Prefixes a training framework puts on every key (DDP, torch.compile, DINO's backbone).
KEY_PREFIXES = ("module.", "_orig_mod.", "backbone.")
# MAE's pretraining-only parts (RETFound): the decoder and the token that stands for masked patches.
MAE_PRETRAINING_KEYS = ("decoder_", "mask_token")
# How many names a one-line report gives of each kind.
SHOWN = 3


class EncoderWeightsError(UserError, RuntimeError):
    """Pretrained weights could not be obtained or did not fit the encoder."""


def read_state_dict(weights_path: Path) -> dict[str, Any]:
    """The tensors of a weights file, unwrapped from a checkpoint dict and stripped of prefixes."""
    if weights_path.suffix == ".safetensors":
        try:
            loaded: Any = load_file(str(weights_path), device="cpu")
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise EncoderWeightsError(_unreadable(weights_path, f"{type(error).__name__}")) from error
    else:
        try:
            loaded = safe_torch_load(
                weights_path, "weights file",
                rebuild="a fresh download from its publisher (docs/your-own-data.md, 'Retinal foundation encoders')",
            )
        except CorruptArtifactError as error:
            raise EncoderWeightsError(f"`model.pretrained_weights`: {error}") from error
    for key in WRAPPER_KEYS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not loaded:
        raise EncoderWeightsError(_unreadable(weights_path, f"it holds a {type(loaded).__name__}"))
    state = {str(key): value for key, value in loaded.items() if isinstance(value, torch.Tensor)}
    for prefix in KEY_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def layout_of(state: Mapping[str, Any]) -> str:
    """A name for the file's layout, for the log line."""
    if any(key.startswith("decoder_") for key in state):
        return "RETFound MAE layout"
    return "timm layout"


def adapt_state_dict(
    state: dict[str, Any], encoder: nn.Module, name: str
) -> tuple[dict[str, Any], list[str]]:
    """``state`` in the encoder's own names and shapes, and the file's keys that were dropped.

    Dropped: MAE's pretraining-only keys (when the file has a decoder) and the classifier. timm's
    family filter then does what it does for timm's own weights (ViT position embeddings resized
    to the configured size, DINOv2 names converted). Works on tensors of the ``meta`` device.
    """
    dropped: list[str] = []
    if layout_of(state) == "RETFound MAE layout":
        dropped += [key for key in state if key.startswith(MAE_PRETRAINING_KEYS)]
        state = {key: value for key, value in state.items() if key not in dropped}
    filter_fn = getattr(
        sys.modules[timm.models.model_entrypoint(name).__module__], "checkpoint_filter_fn", None
    )
    if filter_fn is not None:
        try:
            state = filter_fn(state, encoder)
        except TypeError:  # some families' filters take the state dict alone
            state = filter_fn(state)
    classifiers = encoder.pretrained_cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    own = encoder.state_dict()
    head = [key for key in state if key.split(".", 1)[0] in classifiers and key not in own]
    dropped += head
    return {key: value for key, value in state.items() if key not in head}, dropped


def fit_problems(state: Mapping[str, Any], encoder: nn.Module) -> str:
    """'' when ``state`` fills the encoder exactly, else what does not fit, in one phrase."""
    own = encoder.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    shapes = [
        f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}"
        for key in own if key in state and tuple(state[key].shape) != tuple(own[key].shape)
    ]
    parts = [
        _counted(missing, "encoder weight(s) missing from the file"),
        _counted(unexpected, "key(s) of the file unknown to the encoder"),
        _counted(shapes, "tensor(s) of another shape (file vs encoder)"),
    ]
    return "; ".join(part for part in parts if part)


def load_weights_file(encoder: nn.Module, name: str, weights_path: Path) -> None:
    """Fill ``encoder`` from ``weights_path`` completely, or raise one line saying what does not fit.

    Logs one line: the tensors loaded, the layout, and the count and first names of the keys
    that were dropped.
    """
    raw = read_state_dict(weights_path)
    layout = layout_of(raw)
    try:
        state, dropped = adapt_state_dict(raw, encoder, name)
    except Exception as error:  # noqa: BLE001 - a filter meeting another architecture's tensors
        raise EncoderWeightsError(
            _mismatch(name, weights_path, f"{type(error).__name__}: {error}".splitlines()[0])
        ) from error
    problems = fit_problems(state, encoder)
    if problems:
        raise EncoderWeightsError(_mismatch(name, weights_path, problems))
    encoder.load_state_dict(state, strict=True)
    logger.info(
        "Encoder %s: %d tensors loaded from %s (%s)%s", name, len(state), weights_path, layout,
        f"; {_counted(dropped, 'key(s) of the file not used by the encoder, dropped')}"
        if dropped else "; every key of the file used",
    )


def _counted(keys: list[str], what: str) -> str:
    if not keys:
        return ""
    more = ", ..." if len(keys) > SHOWN else ""
    return f"{len(keys)} {what} ({', '.join(keys[:SHOWN])}{more})"


def _unreadable(weights_path: Path, detail: str) -> str:
    return (
        f"`model.pretrained_weights` file {str(weights_path)!r} holds no weights that can be read "
        f"({detail}). Point it at a state dict saved with torch.save or safetensors, or set "
        "`model.pretrained_weights: null`."
    )


def _mismatch(name: str, weights_path: Path, detail: str) -> str:
    return (
        f"`model.pretrained_weights` file {str(weights_path)!r} does not fit encoder {name!r} "
        f"({detail}). Use weights saved from the same timm architecture (check "
        "`model.encoder_type` / `model.encoder_name`: RETFound is vit_large_patch16_224, "
        "RETFound-Green vit_small_patch14_reg4_dinov2), or set `model.pretrained_weights: null`."
    )
