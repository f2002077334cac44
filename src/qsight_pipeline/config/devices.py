"""The one rule for the ``device`` and ``device_ids`` settings, written once.

Used by the typed settings (``RunSettings.device``/``device_ids``, ``PredictParams.device``), so a
malformed value fails before the first node runs, and by ``training.devices``, which turns a valid
value into a ``torch.device`` (with a logged fallback to CPU when the hardware is missing: only a
malformed value is an error). This module imports nothing but the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

DEVICE_FORMS = "auto, cpu, mps, cuda or cuda:<index> (e.g. cuda:1)"
DEVICE_IDS_FORMS = (
    "GPU indices: a list such as [0, 1], one index, or a string such as '0,1' or '0 1' "
    "(on the command line `--params \"run.device_ids=0 1\"`: Kedro splits --params on commas)"
)

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def parse_device(value: object) -> tuple[str, int | None]:
    """``(kind, index)`` of a ``device`` setting, case and surrounding spaces ignored.

    ``kind`` is auto, cpu, mps or cuda; only cuda takes an index. Raises ValueError (``must be
    ...``, without the key, so that each caller names its own) for anything else.
    """
    if not isinstance(value, str):
        raise ValueError(f"must be a string: {DEVICE_FORMS}")
    match = _DEVICE.match(value.strip().lower())
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise ValueError(f"must be {DEVICE_FORMS}")
    index = match.group(2)
    return match.group(1), None if index is None else int(index)


def parse_device_ids(value: Sequence[int] | str | int | None) -> list[int] | None:
    """GPU indices from ``[0, 1]``, ``"0,1"``, ``"0 1"``, ``"0;1"``, ``"[0, 1]"`` or ``1``.

    ``None`` or ``""`` mean "not set" (all visible GPUs). Raises ValueError (``must be ...``,
    without the key) for anything else, negative indices included.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"must be {DEVICE_IDS_FORMS}")
    if isinstance(value, int):
        ids = [value]
    elif isinstance(value, str):
        items = [item for item in re.split(r"[,;\s]+", value.strip().strip("[]").strip()) if item]
        if not all(re.fullmatch(r"[+-]?\d+", item) for item in items):
            raise ValueError(f"must be {DEVICE_IDS_FORMS}")
        ids = [int(item) for item in items]
    elif isinstance(value, Sequence) and all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        ids = list(value)
    else:
        raise ValueError(f"must be {DEVICE_IDS_FORMS}")
    if any(i < 0 for i in ids):
        raise ValueError(f"must be non-negative GPU indices: {DEVICE_IDS_FORMS}")
    return ids
