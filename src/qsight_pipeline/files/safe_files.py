"""Read the project's files without running their code; a damaged or crafted file is one error.

Every ``.pth`` the project reads goes through :func:`safe_torch_load` (``torch.load`` with
``weights_only=True``: tensors and plain data only), every ``.npy`` through :func:`safe_npy_load`
(``allow_pickle=False``) and our own JSON reads through :func:`read_json_object`; the feature
cache has its own restricted unpickler (:mod:`qsight_pipeline.files.safe_pickle`). Whatever goes wrong
inside those readers (an empty or truncated file, random bytes, a pickle that names
``os.system``, an object array, an ``.npz`` renamed ``.npy``) becomes one
:class:`CorruptArtifactError` that names the file, says that it was not loaded and that it must
not be loaded unsafely, and which ``kedro run`` rebuilds it.

The readers' own messages are deliberately left out of ours: torch's and NumPy's end with advice
to retry unsafely, which is exactly how a crafted file gets to run its code. They stay in the
chained traceback (``QSIGHT_TRACEBACK=1``) for whoever debugs the reader itself.

This module imports only :mod:`qsight_pipeline.errors`; torch and NumPy load when a reader runs.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from qsight_pipeline.errors import ArtifactError

__all__ = [
    "CorruptArtifactError",
    "corrupt_artifact_message",
    "read_json_object",
    "rebuild_command",
    "safe_npy_load",
    "safe_torch_load",
]

_ENSEMBLE = "kedro run --pipelines ensemble"
_INGESTION = "kedro run --pipelines ingestion"
_QUANTUM = "kedro run --pipelines quantum"
_EXPORT = "kedro run --pipelines export"
# Which run writes each artifact again (by file name; see conf/base/catalog_*.yml).
_REBUILD_BY_NAME = {
    "phase1_classical_model.pth": "kedro run --pipelines classical",
    "quantum_training_data.pkl": "kedro run --pipelines classical,features",
    "quantum_head.pth": _QUANTUM,
    "quantum_metrics.json": _QUANTUM,
    "complete_checkpoint.pth": _ENSEMBLE,
    "model_info.json": _ENSEMBLE,
    "training_summary.json": _ENSEMBLE,
    "calibration.json": _ENSEMBLE,
    "report.html": _ENSEMBLE,
    "manifest.csv": _INGESTION,
    "ingestion_report.json": _INGESTION,
    "model.onnx": _EXPORT,
    "model_onnx_info.json": _EXPORT,
}
# What the messages call each ``.pth``.
_WHAT_BY_NAME = {
    "phase1_classical_model.pth": "classical model",
    "quantum_head.pth": "quantum head",
    "complete_checkpoint.pth": "complete checkpoint",
}
_HISTORY = re.compile(r"^(classical|quantum|ensemble)_history\.json$")
# What torch names when a weights-only load meets a global it refuses (e.g. ``posix.system``).
_REFUSED_GLOBAL = re.compile(r"GLOBAL\s+([A-Za-z_][\w.]*)")

_NOT_UNSAFELY_TORCH = (
    "Do not load it with torch.load(weights_only=False) or pickle: that runs whatever code a "
    "crafted file holds."
)
_NOT_UNSAFELY_NPY = (
    "Do not load it with allow_pickle=True or pickle: that runs whatever code a crafted file "
    "holds."
)


class CorruptArtifactError(ArtifactError, ValueError):
    """A file the project reads is damaged, crafted or of the wrong kind; it was not loaded."""


def rebuild_command(path: str | os.PathLike) -> str:
    """The ``kedro run`` that writes ``path`` again, judged from its file name."""
    name = Path(path).name
    if name in _REBUILD_BY_NAME:
        return _REBUILD_BY_NAME[name]
    if name.startswith("image_cache_"):
        return _INGESTION
    if name.startswith("quantum_study"):
        return "kedro run --pipelines quantum_study"
    history = _HISTORY.match(name)
    if history:
        return f"kedro run --pipelines {history.group(1)}"
    return "kedro run"


def corrupt_artifact_message(
    path: str | os.PathLike, problem: str, *, unsafe_advice: str | None = None,
    rebuild: str | None = None,
) -> str:
    """``<path> <problem>, so it was not loaded. [Do not ...] Rebuild it with `<command>`.``"""
    command = rebuild or f"`{rebuild_command(path)}`"
    parts = [f"{path} {problem}, so it was not loaded."]
    if unsafe_advice:
        parts.append(unsafe_advice)
    parts.append(f"Rebuild it with {command}.")
    return " ".join(parts)


def _torch_load_problem(error: Exception, what: str) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused with ``error``."""

    refused = _REFUSED_GLOBAL.search(str(error)) if isinstance(error, pickle.UnpicklingError) else None
    if refused:
        return (
            f"holds a `{refused.group(1)}` object: a {what} may only hold tensors and plain "
            "data, and loading that object could run code"
        )
    return (
        f"is not a readable {what} ({type(error).__name__}): it is damaged (empty, "
        "truncated or not written by torch.save) or holds something other than tensors "
        "and plain data"
    )


def safe_torch_load(
    path: str | os.PathLike,
    what: str | None = None,
    *,
    required_keys: Iterable[str] = (),
    mmap: bool = False,
    rebuild: str | None = None,
) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, refusing bad files in one error.

    Args:
        path: the ``.pth`` file.
        what: what the file is, for the message ("classical model", "complete checkpoint");
            by default judged from the file name, else "PyTorch file".
        required_keys: the file must hold a dict with these keys.
        mmap: memory-map the tensors (only the parts that are used are read).
        rebuild: how to write the file again (a sentence fragment with backticks); by default
            the ``kedro run`` that writes a file of that name.

    Raises:
        FileNotFoundError: ``path`` does not exist (the callers say which pipeline writes it).
        CorruptArtifactError: the file is empty, truncated, not written by ``torch.save``, holds
            an object other than tensors and plain data, or lacks ``required_keys``.
    """
    import torch  # lazy: kept out of kedro start-up (the catalog's datasets import this module)

    path = Path(path)
    what = what or _WHAT_BY_NAME.get(path.name, "PyTorch file")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (OSError, MemoryError) as error:
        if isinstance(error, PermissionError):
            raise ArtifactError(f"{path} cannot be read: permission denied.") from error
        problem = f"cannot be read as a {what} ({type(error).__name__})"
        raise CorruptArtifactError(corrupt_artifact_message(
            path, problem, unsafe_advice=_NOT_UNSAFELY_TORCH, rebuild=rebuild)) from error
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        raise CorruptArtifactError(corrupt_artifact_message(
            path, _torch_load_problem(error, what), unsafe_advice=_NOT_UNSAFELY_TORCH,
            rebuild=rebuild)) from error
    required = list(required_keys)
    if required and (not isinstance(loaded, dict) or any(key not in loaded for key in required)):
        found = (
            f"a dict without {', '.join(f'`{k}`' for k in required if k not in loaded)}"
            if isinstance(loaded, dict) else f"a {type(loaded).__name__}"
        )
        raise CorruptArtifactError(corrupt_artifact_message(
            path, f"is not a QSight {what} (it holds {found})", rebuild=rebuild))
    return loaded


def safe_npy_load(path: str | os.PathLike, mmap_mode: str | None = "r") -> Any:
    """``numpy.load(path, mmap_mode, allow_pickle=False)`` of one ``.npy`` array, or one error.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptArtifactError: the file is empty, truncated, not an ``.npy`` file (random bytes, a
            pickle, an ``.npz`` archive) or holds Python objects (``dtype=object``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except PermissionError as error:
        raise ArtifactError(f"{path} cannot be read: permission denied.") from error
    except Exception as error:  # noqa: BLE001 - NumPy raises ValueError, EOFError, OSError ...
        problem = (
            f"is not a readable NumPy array ({type(error).__name__}): it is damaged (empty, "
            "truncated or not an .npy file) or holds Python objects instead of numbers"
        )
        raise CorruptArtifactError(corrupt_artifact_message(
            path, problem, unsafe_advice=_NOT_UNSAFELY_NPY)) from error
    if not isinstance(array, np.ndarray):  # an .npz archive opens as NpzFile
        close = getattr(array, "close", None)
        if close is not None:
            close()
        raise CorruptArtifactError(corrupt_artifact_message(
            path, "is an .npz archive, not one .npy array"))
    return array


def read_json_object(path: str | os.PathLike, rebuild: str | None = None) -> dict[str, Any]:
    """The JSON object (a dict) in ``path``; :class:`CorruptArtifactError` for anything else."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CorruptArtifactError(corrupt_artifact_message(
            path, f"is not valid JSON ({error}): it is truncated or damaged",
            rebuild=rebuild)) from error
    if not isinstance(value, dict):
        raise CorruptArtifactError(corrupt_artifact_message(
            path, f"holds a JSON {type(value).__name__}, not the object it should", rebuild=rebuild))
    return value
