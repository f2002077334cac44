"""Device choice, DataParallel and autocast, with fallbacks that say what they did.

Every GPU-only request (``cuda``, ``multi_gpu``, ``mixed_precision``) degrades gracefully on a
machine without the hardware: it logs a warning naming the setting and carries on with what
exists, so a config written for a GPU box still runs (slowly) on a laptop or in CI.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from qsight_pipeline.config import RunSettings
from qsight_pipeline.config import devices as rules
from qsight_pipeline.errors import ConfigError

logger = logging.getLogger(__name__)


def resolve_device(
    device: str | torch.device | None = RunSettings.model_fields["device"].default,
) -> torch.device:
    """Turn the ``device`` setting into a usable ``torch.device``.

    ``auto`` (or None) picks ``cuda`` when available, else ``cpu``. ``cuda`` / ``cuda:N`` without
    CUDA falls back to CPU with a warning; ``cuda:N`` beyond the visible GPUs falls back to
    ``cuda:0``. A malformed value (the rule is ``config.devices.parse_device``) is a :class:`ConfigError`.
    """
    if isinstance(device, torch.device):
        device = device.type if device.type in ("cpu", "mps") else str(device)
    try:
        kind, index = rules.parse_device("auto" if device is None else device)
    except ValueError as error:
        raise ConfigError(f"`device` {error}, got {device!r}") from None
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        logger.warning("`device` is %r but MPS is not available; using CPU.", device)
        return torch.device("cpu")
    if not torch.cuda.is_available():
        logger.warning("`device` is %r but CUDA is not available; using CPU.", device)
        return torch.device("cpu")
    if index is None:
        return torch.device("cuda")
    count = torch.cuda.device_count()
    if index >= count:
        logger.warning(
            "`device` is %r but only %d GPU(s) are visible (cuda:0..cuda:%d); using cuda:0.",
            device,
            count,
            count - 1,
        )
        return torch.device("cuda", 0)
    return torch.device("cuda", index)


def parse_device_ids(device_ids: Sequence[int] | str | int | None) -> list[int] | None:
    """Accept ``[0, 1]``, ``"0,1"`` (the guide's ``--device-ids 0,1``), ``1`` or ``None``.

    A string may also separate the ids with spaces or semicolons, because ``kedro run --params``
    splits its argument on commas: ``--params "device_ids=0 1"``. The rule is
    ``config.devices.parse_device_ids``; anything else is a :class:`ConfigError`.
    """
    try:
        return rules.parse_device_ids(device_ids)
    except ValueError as error:
        raise ConfigError(f"`device_ids` {error}, got {device_ids!r}") from None


def maybe_data_parallel(
    model: nn.Module,
    multi_gpu: bool,
    device_ids: Sequence[int] | str | int | None,
    device: torch.device,
) -> nn.Module:
    """Wrap ``model`` in ``nn.DataParallel`` when asked and possible, else return it unchanged.

    The model must already be on ``device``. With fewer GPUs than asked for, the visible ones are
    used (a warning lists the dropped ids); with fewer than two, or on CPU, DataParallel is
    skipped with a warning. Callers keep the unwrapped ``model`` for state dicts and attributes.
    """
    if not multi_gpu:
        return model
    if device.type != "cuda":
        logger.warning(
            "`multi_gpu` is true but training runs on %s; DataParallel skipped, using one device.",
            device,
        )
        return model
    available = torch.cuda.device_count()
    requested = parse_device_ids(device_ids) or list(range(available))
    usable = [i for i in dict.fromkeys(requested) if i < available]
    dropped = [i for i in requested if i >= available]
    if dropped:
        logger.warning(
            "`device_ids` asks for GPU(s) %s but only %d are visible; using %s.",
            dropped,
            available,
            usable or "one device",
        )
    if len(usable) < 2:
        logger.warning(
            "`multi_gpu` is true but only %d usable GPU(s); DataParallel skipped.", len(usable)
        )
        return model
    # DataParallel gathers on, and expects the parameters on, the first listed device.
    if device.index is not None and device.index in usable:
        usable.remove(device.index)
        usable.insert(0, device.index)
    model.to(torch.device("cuda", usable[0]))
    logger.info("DataParallel over GPUs %s", usable)
    return nn.DataParallel(model, device_ids=usable, output_device=usable[0])


def autocast_enabled(mixed_precision: bool | None, device: torch.device) -> bool:
    """Whether to train with fp16 autocast + GradScaler.

    ``None`` (the default) means on exactly when the device is CUDA. On other devices autocast is
    off and, when it was asked for, a log line says so: fp16 autocast is a CUDA feature, and CPU
    bf16 autocast was not measured to help these small models.
    """
    if device.type == "cuda":
        return mixed_precision is None or bool(mixed_precision)
    if mixed_precision:
        logger.warning(
            "`mixed_precision` is true but training runs on %s: autocast is off on CPU, "
            "training in float32.",
            device,
        )
    return False


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 on CUDA GPUs that support it (no loss scaling needed, same speed as float16),
    else autocast's default for the device (float16 on older GPUs)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None
