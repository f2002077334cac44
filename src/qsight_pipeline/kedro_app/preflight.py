"""Checks of the machine a run is about to use, before the first node: folders and weights.

The parameter values themselves are validated by the typed configuration; this module checks
what those values point at, which can only be seen on this machine:

- ``output_dir`` (and ``checkpoint_dir`` when set) is a folder, or can be made one, and is
  writable; not a file, not read-only. Otherwise the run would fail after training.
- the encoder's pretrained weights can be obtained: ``model.pretrained_weights`` is an existing
  file, or with ``model.pretrained: true`` the weights are in the local timm / Hugging Face cache
  or the download host is reachable (and ``HF_HUB_OFFLINE`` is not set). Otherwise the run would
  fail after ingestion.

:func:`check_run_environment` runs them all; every failure is a :class:`PreflightError` whose
message names the setting to change.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from qsight_pipeline.config import ModelParams, QSightParameters
from qsight_pipeline.config.model import DEFAULT_ENCODER_NAMES
from qsight_pipeline.errors import ConfigError

# Pipelines that write the guide's artifacts into output_dir / train with checkpoint_dir.
WRITES_OUTPUT_DIR = frozenset({"__default__", "classical", "features", "quantum", "ensemble"})
BUILDS_ENCODER = frozenset({"__default__", "classical"})
DOWNLOAD_HOST = ("huggingface.co", 443)
NETWORK_TIMEOUT_S = 3.0
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


class PreflightError(ConfigError):
    """A setting points at something unusable on this machine."""


def check_run_environment(parameters: QSightParameters, pipeline_names: Collection[str]) -> None:
    """Every check for the pipelines about to run (``["__default__"]`` for a plain ``kedro run``)."""
    names = set(pipeline_names) or {"__default__"}
    if names & WRITES_OUTPUT_DIR:
        check_writable_folder(parameters.run.output_dir, "run.output_dir")
        if parameters.run.checkpoint_dir:
            check_writable_folder(parameters.run.checkpoint_dir, "run.checkpoint_dir")
    if names & BUILDS_ENCODER:
        check_pretrained_weights(parameters.model.model_dump())


def check_writable_folder(folder: Any, setting: str) -> Path | None:
    """``folder`` is a writable directory, or can be created as one."""
    if folder in (None, ""):
        return None
    path = Path(str(folder)).expanduser()
    check_not_a_file(path, setting)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".qsight_write_test."):
            pass
    except OSError as error:
        raise PreflightError(
            f"`{setting}` is {str(path)!r}, which cannot be written ({error.strerror or error}). "
            f"Choose a folder you can write to: `kedro run --params {setting}=<folder>`."
        ) from None
    return path


def check_not_a_file(path: Path, setting: str) -> None:
    """Neither ``path`` nor the first of its ancestors that exists is a file (or anything else
    that is not a folder), so that ``mkdir`` can make it a folder."""
    existing = path
    while not existing.exists():  # the first existing ancestor is where mkdir would start
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise PreflightError(
            f"`{setting}` is {str(path)!r}, which {where}. Point {setting} at a folder, e.g. "
            f"`kedro run --params {setting}=outputs/my_run`."
        )


def check_pretrained_weights(model: Mapping[str, Any]) -> str:
    """Where the encoder's weights will come from: ``"file"``, ``"cache"``, ``"download"`` or
    ``"none"``; a :class:`PreflightError` when they cannot be had."""
    local = model.get("pretrained_weights")
    if local:
        path = Path(str(local)).expanduser()
        if not path.is_file():
            raise PreflightError(
                f"`model.pretrained_weights` is {str(path)!r}, which is not a file. Point it at a "
                "weights file for the encoder, or set `model.pretrained_weights: null` (with "
                "`model.pretrained: true` to download them, or `false` for a random init)."
            )
        return "file"
    if not model.get("pretrained"):
        return "none"
    name = _encoder_name(model)
    if name is None:
        return "download"  # an unknown encoder name: the model checks report it
    if _in_download_cache(name):
        return "cache"
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline or not _download_host_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else (
            f"{DOWNLOAD_HOST[0]} cannot be reached from this machine"
        )
        raise PreflightError(
            f"`model.pretrained: true` needs ImageNet weights for encoder {name!r}, but they are "
            f"not in the local timm/Hugging Face cache and {why}. Set `model.pretrained_weights` "
            "to a local weights file for this encoder, or `model.pretrained: false` to train from "
            "a random init (much weaker on real data)."
        )
    return "download"


def _encoder_name(model: Mapping[str, Any]) -> str | None:
    encoder_type = model.get("encoder_type", ModelParams.model_fields["encoder_type"].default)
    name = model.get("encoder_name") or DEFAULT_ENCODER_NAMES.get(encoder_type)
    return str(name) if name else None


def _in_download_cache(name: str) -> bool:
    """The weights timm would download for ``name`` are already on disk."""
    try:
        # lazy: kept out of kedro start-up
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
    except Exception:  # an unknown name or an old timm: let the download decide
        return False
    if cfg is None:
        return False
    if cfg.hf_hub_id:
        # lazy: kept out of kedro start-up
        from huggingface_hub import try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        if any(isinstance(try_to_load_from_cache(repo, f), str) for f in _WEIGHT_FILES):
            return True
    if cfg.url:
        # lazy: kept out of kedro start-up
        import torch

        return (Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name).is_file()
    return False


def _download_host_reachable() -> bool:
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy decides; the download itself reports its errors
    try:
        socket.create_connection(DOWNLOAD_HOST, timeout=NETWORK_TIMEOUT_S).close()
    except OSError:
        return False
    return True
