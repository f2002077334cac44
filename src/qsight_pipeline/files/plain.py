"""The one converter from the project's values to plain JSON-friendly Python data.

Used for summaries, ``model_info.json``, tracker payloads and fingerprints. It imports neither
torch nor numpy: arrays and tensors are recognised by their ``tolist``/``item`` methods.
"""

from __future__ import annotations

import os
from dataclasses import asdict, is_dataclass
from pathlib import PurePath
from typing import Any


def path_text(path: str | os.PathLike) -> str:
    """A file name (or text that holds one) as text that any UTF-8 output can write.

    Python decodes a name that is not valid UTF-8 with lone surrogates (``bad\\udcff.png``),
    which every CSV, JSON, log or HTML writer refuses with a ``UnicodeEncodeError``. Here its
    undecodable bytes are shown escaped instead (``bad\\xff.png``); a valid name comes back as
    it is. The one place where a path becomes text for output: manifests, predictions, reports.
    """
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a surrogate that no file system name decodes to
        return os.fspath(path).encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def to_plain(value: Any) -> Any:
    """Dataclasses, pydantic models, numpy/torch scalars and arrays, tuples and paths to plain
    dicts, lists, numbers and strings; anything else is returned as it is."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_plain(asdict(value))
    if hasattr(value, "model_dump") and not isinstance(value, type):  # pydantic
        return to_plain(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, PurePath):
        return path_text(value)
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):  # numpy/torch arrays, scalars
        return value.tolist()
    return value


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: plain data where possible, else ``str``."""
    plain = to_plain(value)
    return str(plain) if plain is value else plain
