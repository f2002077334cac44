"""Kedro datasets that kedro-datasets does not provide.

- :class:`NpyDataset`: a NumPy array in ``.npy`` format, memory-mapped on load so that training
  reads the decode-once image cache without holding it all in memory.
- :class:`TorchDataset`: any object ``torch.save`` can write (checkpoints, state dicts).
- :class:`CheckpointDataset`: ``complete_checkpoint.pth``, refusing readable copies beside it
  (``model_info.json`` ...) that differ from what it holds, as ``load_model`` does.
- :class:`SafePickleDataset`: a pickle of plain data (the feature cache), loaded with a restricted
  unpickler that refuses anything that could run code (``qsight_pipeline.files.safe_pickle``).
- :class:`FileSetDataset`: a folder of figures or images written from a dict, that removes
  only the files it wrote itself.
- :class:`AtomicDataset`: wraps any file dataset of kedro-datasets (JSON, pickle, text ...) so that
  its save goes to a temporary file beside the target and is renamed into place.

All of them write atomically (temporary file, then rename), so a killed run never leaves a half-written
file that a later run would trust. None of them runs code from a file it loads, and a damaged or
crafted file is an :class:`ArtifactDatasetError` whose one line names the file and the ``kedro
run`` that rebuilds it (``qsight_pipeline.files.safe_files``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.files import lineage, storage
from qsight_pipeline.files.safe_files import (
    corrupt_artifact_message,
    safe_npy_load,
    safe_torch_load,
)
from qsight_pipeline.files.safe_pickle import safe_load
from qsight_pipeline.files.storage import (
    atomic_torch_save,
    atomic_write,
    is_plain_name,
    readable_path,
    remove_proven,
    writing,
)

logger = logging.getLogger(__name__)


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
        "all), or point `run.output_dir` at the folder of an earlier run."
    )


def _load_artifact(filepath: PurePosixPath, read: Callable[[Path], Any]) -> Any:
    """``read`` of the file, or one line saying it is missing or damaged (an artifact error)."""
    path = readable_path(filepath)
    if not path.is_file():
        raise MissingArtifactError(_missing_artifact_message(path))
    with _one_line_errors():
        return read(path)


class NpyDataset(AbstractDataset[np.ndarray, np.ndarray]):
    """A ``.npy`` file; ``mmap_mode`` (default ``"r"``) is passed to :func:`numpy.load`."""

    def __init__(self, filepath: str, mmap_mode: str | None = "r", metadata: dict | None = None):
        self._filepath = PurePosixPath(filepath)
        self._mmap_mode = mmap_mode
        self.metadata = metadata

    def load(self) -> np.ndarray:
        path = readable_path(self._filepath)
        if not path.is_file():
            raise MissingArtifactError(
                f"Array file {path} does not exist. Run the pipeline that writes it first "
                "(for the image cache: `kedro run --pipelines ingestion`)."
            )
        with _one_line_errors():
            array = safe_npy_load(path, mmap_mode=self._mmap_mode)
        return lineage.attach(array, lineage.read_sidecar(Path(self._filepath)))

    def save(self, data: np.ndarray) -> None:
        # The old lineage record goes first, the data next and the new record last: a kill at
        # any point leaves an array with no record (which readers refuse) or the complete new
        # pair, never an old record beside new data (or the reverse).
        path = Path(self._filepath)
        lineage.write_sidecar(path, None)
        atomic_write(path, lambda handle: np.save(handle, np.asarray(data), allow_pickle=False))
        lineage.write_sidecar(path, lineage.of(data))

    def _exists(self) -> bool:
        return readable_path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "mmap_mode": self._mmap_mode}


class _NoneWhenAbsent:
    """Mixin (listed before the dataset class): ``load`` gives ``None`` when the file is not there
    (never written), and the dataset's own ``load`` otherwise."""

    _filepath: PurePosixPath | Path

    def load(self) -> Any:
        if not readable_path(self._filepath).is_file():
            return None
        return super().load()  # type: ignore[misc]


class OptionalNpyDataset(_NoneWhenAbsent, NpyDataset):
    """A :class:`NpyDataset` that loads ``None`` when its file is not there (never written)."""

    def save(self, data: np.ndarray) -> None:
        raise DatasetError(f"{self._filepath} is read-only here (an optional input).")


class EmbeddingTableDataset(NpyDataset):
    """A frozen encoder's embedding table (``training.embedding_cache``), with its lineage sidecar.

    Saving an empty array (``embedding_cache.no_table()``: this run trains its encoder) writes no
    array: an older table stays on disk, its record replaced by "no record". Loading gives that
    empty array when there is no file or no record, so a step never takes a stale table for this
    run's.
    """

    def load(self) -> np.ndarray:
        path = readable_path(self._filepath)
        if not path.is_file() or lineage.read_sidecar(Path(self._filepath)) is None:
            return np.zeros((0, 0), dtype=np.float32)
        return super().load()

    def save(self, data: np.ndarray) -> None:
        if np.asarray(data).size == 0:
            lineage.write_sidecar(Path(self._filepath), None)
            return
        super().save(data)


class TorchDataset(AbstractDataset[Any, Any]):
    """A file written by ``torch.save``, always loaded with ``weights_only=True``.

    ``required_keys``: the file must hold a dict with these keys (e.g. ``[format, model_state]``);
    anything else, like a damaged file or one holding objects other than tensors and plain data,
    is an :class:`ArtifactDatasetError`.

    ``staged: false`` writes it in place at once even inside a run's transaction
    (``storage.transaction``): for artifacts whose every reader checks their lineage, so that a
    later failure of the run does not throw away hours of training.
    """

    def __init__(
        self, filepath: str, required_keys: Sequence[str] = (), metadata: dict | None = None,
        staged: bool = True,
    ):
        self._filepath = PurePosixPath(filepath)
        self._required_keys = tuple(required_keys)
        self._staged = staged
        self.metadata = metadata

    def load(self) -> Any:
        return _load_artifact(
            self._filepath, lambda path: safe_torch_load(path, required_keys=self._required_keys))

    def save(self, data: Any) -> None:
        atomic_torch_save(data, self._filepath, self._staged)

    def _exists(self) -> bool:
        return readable_path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "required_keys": list(self._required_keys)}


class CheckpointDataset(TorchDataset):
    """``complete_checkpoint.pth``: a :class:`TorchDataset` that also refuses, as ``load_model``
    does, a ``model_info.json``, ``training_summary.json`` or ``calibration.json`` beside it that
    differs from the copy the checkpoint holds (edited, or from another run): one line naming
    the file (``inference.loading.check_saved_copies``). The checkpoint is what grades.
    """

    def load(self) -> Any:
        checkpoint = super().load()
        # lazy: torch and the model code load only when a checkpoint is read
        from qsight_pipeline.inference.loading import check_saved_copies

        with _one_line_errors():
            check_saved_copies(checkpoint, Path(self._filepath))
        return checkpoint


class SafePickleDataset(AbstractDataset[Any, Any]):
    """A pickle of plain data: saved with :mod:`pickle` (atomically), loaded without running code.

    Loading admits only dicts, lists, tuples, numbers, strings, ``None``/bools and NumPy arrays;
    anything else is an :class:`~qsight_pipeline.errors.ArtifactError` naming the file and the
    offending ``module.name``. ``pickle.load`` reads the file as usual in a notebook.
    """

    def __init__(self, filepath: str, protocol: int = 5, metadata: dict | None = None,
                 staged: bool = True):
        self._filepath = PurePosixPath(filepath)
        self._protocol = protocol
        self._staged = staged  # as for TorchDataset
        self.metadata = metadata

    def load(self) -> Any:
        return _load_artifact(self._filepath, safe_load)

    def save(self, data: Any) -> None:
        atomic_write(
            self._filepath, lambda handle: pickle.dump(data, handle, protocol=self._protocol),
            self._staged,
        )

    def _exists(self) -> bool:
        return readable_path(self._filepath).is_file()

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
          type: qsight_pipeline.kedro_app.datasets.AtomicDataset
          filepath: data/06_models/trained_model/model_info.json
          dataset:
            type: json.JSONDataset
            save_args: {indent: 2}

    ``staged: false`` writes it in place at once even inside a run's transaction (for records
    that must survive a run that fails later, such as the ids of submitted hardware jobs).
    """

    def __init__(self, filepath: str, dataset: dict[str, Any] | str, metadata: dict | None = None,
                 staged: bool = True):
        self._filepath = Path(filepath)
        self._staged = staged
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
        path = readable_path(self._filepath)
        if not path.is_file():
            raise MissingArtifactError(_missing_artifact_message(self._filepath))
        try:
            return self._inner(path).load()
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
        with writing(self._filepath, self._staged) as tmp:
            self._inner(tmp).save(data)

    def _exists(self) -> bool:
        return readable_path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "dataset": self._dataset_config.get("type")}


class OptionalDataset(_NoneWhenAbsent, AtomicDataset):
    """An :class:`AtomicDataset` that loads ``None`` when its file does not exist yet.

    For inputs a node can do without, such as the quantum study's summary for the report, or
    an earlier report.html to add the study's section to.
    """


class BinaryFileDataset(AbstractDataset[bytes, bytes]):
    """Raw bytes (e.g. ``model.onnx``); loading reads them, it never runs anything."""

    def __init__(self, filepath: str, metadata: dict | None = None):
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> bytes:
        path = readable_path(self._filepath)
        if not path.is_file():
            raise MissingArtifactError(_missing_artifact_message(path))
        return path.read_bytes()

    def save(self, data: bytes) -> None:
        atomic_write(self._filepath, lambda handle: handle.write(bytes(data)))

    def _exists(self) -> bool:
        return readable_path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class FileSetDataset(AbstractDataset[dict[str, Any], dict[str, Path]]):
    """A folder of files written from a dict (``{name: figure | PIL image | bytes | str}``).

    Replaces kedro-datasets' ``overwrite: true`` folders (figures, heatmaps), which delete the
    whole folder before saving. Here every file is written atomically (and staged with the run's
    other outputs), and the folder keeps an index of what this dataset wrote
    (``.qsight-files.json``: each file's plain name and the SHA-256 of the bytes written). Once
    the run commits, a file of the previous save that the new one did not write is removed only
    when the index names it as a plain file of this folder (no separator, no ``..``, no absolute
    path) and its content still has the recorded hash; anything else the index lists (a forged
    or stale entry, a file the user has since changed or replaced, an index of an older version
    without hashes) is left alone and logged. Files the index does not list are never touched.

    Loading returns ``{name: path}`` of the files the index lists.
    """

    INDEX = ".qsight-files.json"
    INDEX_FORMAT = 2

    def __init__(self, path: str, filename_suffix: str = "", save_args: dict | None = None,
                 metadata: dict | None = None):
        self._path = Path(path)
        self._suffix = filename_suffix
        self._save_args = {"format": "png", **(save_args or {})}
        self.metadata = metadata

    def _index(self) -> dict[str, str | None]:
        """``{name: sha256 or None}`` of the index's plain-name entries (None: no hash known)."""
        index = readable_path(self._path / self.INDEX)
        try:
            files = json.loads(index.read_text(encoding="utf-8")).get("files", {})
        except (OSError, ValueError, AttributeError):
            return {}
        if isinstance(files, list):  # written before hashes were recorded: nothing to prove with
            files = dict.fromkeys(files)
        if not isinstance(files, dict):
            return {}
        entries: dict[str, str | None] = {}
        for name, digest in files.items():
            if not is_plain_name(name):
                logger.warning("%s lists %r, which is not a plain file name of that folder; "
                               "ignored (nothing outside the folder is ever touched)",
                               self._path / self.INDEX, name)
                continue
            entries[name] = digest if isinstance(digest, str) else None
        return entries

    def _target(self, name: str) -> Path:
        file_name = f"{name}{self._suffix}"
        if not is_plain_name(file_name) or file_name == self.INDEX:
            raise DatasetError(f"{self._path}: refusing to write the file name {file_name!r} "
                               "(a file of this folder needs a plain name, with no separator)")
        return self._path / file_name

    def load(self) -> dict[str, Path]:
        return {name: self._path / name for name in self._index()
                if readable_path(self._path / name).is_file()}

    def save(self, data: dict[str, Any]) -> None:
        previous = self._index()
        written: dict[str, str] = {}
        for name, item in sorted(data.items()):
            target = self._target(name)
            payload = self._payload(item)
            atomic_write(target, lambda handle, payload=payload: handle.write(payload))
            written[target.name] = hashlib.sha256(payload).hexdigest()
        index = {"format": self.INDEX_FORMAT, "files": written}
        atomic_write(self._path / self.INDEX,
                     lambda handle: handle.write(json.dumps(index, indent=1).encode()))
        stale = {name: digest for name, digest in previous.items() if name not in written}
        if stale:
            storage.when_committed(lambda: remove_proven(self._path, stale))

    def _payload(self, item: Any) -> bytes:
        if callable(item) and not hasattr(item, "save") and not hasattr(item, "savefig"):
            item = item()  # a lazily computed partition, as PartitionedDataset accepts
        if isinstance(item, bytes | bytearray):
            return bytes(item)
        if isinstance(item, str):
            return item.encode("utf-8")
        if hasattr(item, "savefig"):  # a matplotlib figure
            if set(self._save_args) <= {"format", "dpi"} and self._save_args["format"] == "png":
                # lazy: kept out of kedro start-up (matplotlib loads when a figure is saved)
                from qsight_pipeline.reporting.figures import figure_png  # drawn once, reused

                return figure_png(item, int(self._save_args.get("dpi", 100)))
            buffer = io.BytesIO()
            item.savefig(buffer, **self._save_args)
            return buffer.getvalue()
        buffer = io.BytesIO()  # a PIL image
        item.save(buffer, format=str(self._save_args["format"]).upper())
        return buffer.getvalue()

    def _exists(self) -> bool:
        return readable_path(self._path / self.INDEX).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "filename_suffix": self._suffix}
