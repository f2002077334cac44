"""Read pickles that someone else may have written, without running their code.

``quantum_training_data.pkl`` is the artifact users share (the quantum and ensemble stages rerun
from it alone), so it must not be able to run code when loaded. Plain :func:`pickle.load` calls
whatever callable the file names; :class:`RestrictedUnpickler` resolves only the few globals that
plain data needs: NumPy's array and scalar reconstruction and ``numpy.dtype``. Every other global
(``os.system``, ``builtins.eval``, ``torch._utils._rebuild_tensor_v2``, a user class, ...) is
refused with an :class:`~qsight_pipeline.errors.ArtifactError` that names the file and the global.

The file stays a standard pickle: ``pickle.load`` in a notebook still reads it.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.files.safe_files import CorruptArtifactError, corrupt_artifact_message

# (module, name) pairs that rebuild NumPy arrays, scalars and dtypes and nothing else. numpy 2
# pickles under ``numpy._core``, numpy 1 under ``numpy.core``; both spellings are accepted.
_NUMPY_GLOBALS = frozenset(
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | frozenset(
    {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
     ("numpy._core.numeric", "_frombuffer")}
)
# NumPy pickles its dtypes' classes by name (numpy.dtypes.Float32DType ...) with protocol 5.
_NUMPY_DTYPE_MODULE = "numpy.dtypes"
# Harmless constructors of builtin values; ``_codecs.encode`` is how protocols 0-2 store bytes.
_SAFE_BUILTINS = frozenset({("_codecs", "encode"), ("builtins", "complex"), ("builtins", "set"),
                            ("builtins", "frozenset"), ("builtins", "bytearray"),
                            ("builtins", "slice"), ("builtins", "range")})


_NOT_UNSAFELY = (
    "Do not open it with pickle.load or torch.load(weights_only=False): that runs whatever code a "
    "crafted file holds."
)
_REBUILD = "`kedro run --pipelines classical,features`"


class UnsafePickleError(ArtifactError):
    """A pickle names a global outside the allow-list; loading it could run code."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers, numbers, strings and NumPy arrays only."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS or (module, name) in _SAFE_BUILTINS or (
            module == _NUMPY_DTYPE_MODULE and name.endswith("DType")
        ):
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source} contains a `{module}.{name}` object. This file may only hold plain "
            "data (dicts, lists, numbers, strings and NumPy arrays), and loading that object "
            f"could run code, so it was not loaded. {_NOT_UNSAFELY} Use a feature cache you made "
            f"yourself: {_REBUILD} rebuilds it."
        )


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`."""
    return _load(io.BytesIO(data), source)


def safe_load(path: str | os.PathLike) -> Any:
    """Unpickle the file at ``path`` with :class:`RestrictedUnpickler`."""
    path = Path(path)
    with path.open("rb") as handle:
        return _load(handle, str(path))


def _load(handle: Any, source: str) -> Any:
    try:
        return RestrictedUnpickler(handle, source).load()
    except UnsafePickleError:
        raise
    except Exception as error:  # noqa: BLE001 - a damaged pickle raises almost any type
        raise CorruptArtifactError(corrupt_artifact_message(
            source,
            f"is not a readable feature cache ({type(error).__name__}): it is damaged (empty, "
            "truncated or not a pickle)",
            unsafe_advice=_NOT_UNSAFELY, rebuild=_REBUILD,
        )) from error
