"""Kedro datasets that kedro-datasets does not provide.

- :class:`NpyDataset`: a NumPy array in ``.npy`` format, memory-mapped on load so that training
  reads the decode-once image cache without holding it all in memory.
- :class:`TorchDataset`: any object ``torch.save`` can write (checkpoints, state dicts).
- :class:`SafePickleDataset`: a pickle of plain data (the feature cache), loaded with a restricted
  unpickler that refuses anything that could run code (``qsight_pipeline.safe_pickle``).
- :class:`AtomicDataset`: wraps any file dataset of kedro-datasets (JSON, pickle, text ...) so that
  its save goes to a temporary file beside the target and is renamed into place.

All of them write atomically (temporary file, then rename), so a killed run never leaves a half-written
file that a later run would trust. None of them runs code from a file it loads, and a damaged or
crafted file is an :class:`ArtifactDatasetError` whose one line names the file and the ``kedro
run`` that rebuilds it (``qsight_pipeline.safe_files``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

from qsight_pipeline import lineage
from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.safe_files import corrupt_artifact_message, safe_npy_load, safe_torch_load
from qsight_pipeline.safe_pickle import safe_load
from qsight_pipeline.storage import atomic_torch_save, atomic_write


class MissingArtifactError(ArtifactError, DatasetError):
    """A file a pipeline reads has not been written yet: run the pipeline that writes it."""


class ArtifactDatasetError(ArtifactError, DatasetError):
    """An :class:`ArtifactError` raised while loading a dataset (a damaged or crafted file).

    Being a ``DatasetError``, Kedro passes it through instead of wrapping it in "Failed while
    loading data from dataset ...", so ``kedro run`` ends with its message on one line.
    """


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except ArtifactError as error:
        if isinstance(error, DatasetError):
            raise
        raise ArtifactDatasetError(str(error)) from error


def _missing_artifact_message(path: Path) -> str:
    return (
        f"{path} does not exist. Run the pipeline that writes it first (`kedro run` runs them "
        "all), or point `output_dir` at the folder of an earlier run."
    )


class NpyDataset(AbstractDataset[np.ndarray, np.ndarray]):
    """A ``.npy`` file; ``mmap_mode`` (default ``"r"``) is passed to :func:`numpy.load`."""

    def __init__(self, filepath: str, mmap_mode: str | None = "r", metadata: dict | None = None):
        self._filepath = PurePosixPath(filepath)
        self._mmap_mode = mmap_mode
        self.metadata = metadata

    def load(self) -> np.ndarray:
        path = Path(self._filepath)
        if not path.is_file():
            raise MissingArtifactError(
                f"Array file {path} does not exist. Run the pipeline that writes it first "
                "(for the image cache: `kedro run --pipeline ingestion`)."
            )
        with _one_line_errors():
            array = safe_npy_load(path, mmap_mode=self._mmap_mode)
        return lineage.attach(array, lineage.read_sidecar(path))

    def save(self, data: np.ndarray) -> None:
        # The lineage sidecar goes first: a kill between the two writes leaves a sidecar that
        # disagrees with the manifest, which readers refuse, never an unmarked mix.
        lineage.write_sidecar(Path(self._filepath), lineage.of(data))
        atomic_write(self._filepath, lambda handle: np.save(handle, np.asarray(data), allow_pickle=False))

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "mmap_mode": self._mmap_mode}


class TorchDataset(AbstractDataset[Any, Any]):
    """A file written by ``torch.save``, always loaded with ``weights_only=True``.

    ``required_keys``: the file must hold a dict with these keys (e.g. ``[format, model_state]``);
    anything else, like a damaged file or one holding objects other than tensors and plain data,
    is an :class:`ArtifactDatasetError`.
    """

    def __init__(
        self, filepath: str, required_keys: Sequence[str] = (), metadata: dict | None = None
    ):
        self._filepath = PurePosixPath(filepath)
        self._required_keys = tuple(required_keys)
        self.metadata = metadata

    def load(self) -> Any:
        path = Path(self._filepath)
        if not path.is_file():
            raise MissingArtifactError(_missing_artifact_message(path))
        with _one_line_errors():
            return safe_torch_load(path, required_keys=self._required_keys)

    def save(self, data: Any) -> None:
        atomic_torch_save(data, self._filepath)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "required_keys": list(self._required_keys)}


class SafePickleDataset(AbstractDataset[Any, Any]):
    """A pickle of plain data: saved with :mod:`pickle` (atomically), loaded without running code.

    Loading admits only dicts, lists, tuples, numbers, strings, ``None``/bools and NumPy arrays;
    anything else is an :class:`~qsight_pipeline.errors.ArtifactError` naming the file and the
    offending ``module.name``. ``pickle.load`` reads the file as usual in a notebook.
    """

    def __init__(self, filepath: str, protocol: int = 5, metadata: dict | None = None):
        self._filepath = PurePosixPath(filepath)
        self._protocol = protocol
        self.metadata = metadata

    def load(self) -> Any:
        path = Path(self._filepath)
        if not path.is_file():
            raise MissingArtifactError(_missing_artifact_message(path))
        with _one_line_errors():
            return safe_load(path)

    def save(self, data: Any) -> None:
        import pickle

        atomic_write(self._filepath, lambda handle: pickle.dump(data, handle, protocol=self._protocol))

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "protocol": self._protocol}


# Errors a file-format reader raises for a damaged file (JSONDecodeError, UnicodeDecodeError and
# pandas' ParserError / EmptyDataError are ValueErrors).
_CORRUPT_FILE_ERRORS = (ValueError, EOFError)
_FORMATS = {"json.JSONDataset": "JSON", "pandas.CSVDataset": "CSV", "text.TextDataset": "text"}


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception Kedro's dataset wrappers chained ``error`` from."""
    seen = set()
    while error.__cause__ is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.__cause__
    return error


class AtomicDataset(AbstractDataset[Any, Any]):
    """Any file-based dataset, saved atomically.

    ``dataset`` is the wrapped dataset's config without its ``filepath``; the wrapper saves to a
    temporary sibling with the same suffix (so datasets that read the format from the extension
    still work) and then renames it over ``filepath``::

        model_info:
          type: qsight_pipeline.datasets.AtomicDataset
          filepath: data/06_models/trained_model/model_info.json
          dataset:
            type: json.JSONDataset
            save_args: {indent: 2}
    """

    def __init__(self, filepath: str, dataset: dict[str, Any] | str, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self._dataset_config = {"type": dataset} if isinstance(dataset, str) else dict(dataset)
        if "filepath" in self._dataset_config:
            raise DatasetError(
                f"AtomicDataset for {filepath}: give `filepath` on the wrapper, not inside `dataset`."
            )
        self.metadata = metadata

    def _inner(self, filepath: Path) -> AbstractDataset:
        config = {**self._dataset_config, "filepath": str(filepath)}
        return AbstractDataset.from_config(f"atomic:{self._filepath.name}", config)

    def load(self) -> Any:
        if not self._filepath.is_file():
            raise MissingArtifactError(_missing_artifact_message(self._filepath))
        try:
            return self._inner(self._filepath).load()
        except DatasetError as error:
            cause = _root_cause(error)
            if not isinstance(cause, _CORRUPT_FILE_ERRORS):
                raise
            kind = _FORMATS.get(str(self._dataset_config.get("type")), "file of its format")
            reason = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else ""
            problem = f"is not valid {kind} ({type(cause).__name__}{': ' + reason if reason else ''})"
            raise ArtifactDatasetError(corrupt_artifact_message(
                self._filepath, f"{problem}: it is truncated or damaged")) from error

    def save(self, data: Any) -> None:
        target = self._filepath
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.tmp{target.suffix}")
        try:
            self._inner(tmp).save(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "dataset": self._dataset_config.get("type")}


class OptionalDataset(AtomicDataset):
    """An :class:`AtomicDataset` that loads ``None`` when its file does not exist yet.

    For inputs a node can do without, such as the quantum study's summary for the report, or
    an earlier report.html to add the study's section to.
    """

    def load(self) -> Any:
        if not self._filepath.is_file():
            return None
        return super().load()

class BinaryFileDataset(AbstractDataset[bytes, bytes]):
    """Raw bytes (e.g. ``model.onnx``); loading reads them, it never runs anything."""

    def __init__(self, filepath: str, metadata: dict | None = None):
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> bytes:
        path = Path(self._filepath)
        if not path.is_file():
            raise MissingArtifactError(_missing_artifact_message(path))
        return path.read_bytes()

    def save(self, data: bytes) -> None:
        atomic_write(self._filepath, lambda handle: handle.write(bytes(data)))

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
