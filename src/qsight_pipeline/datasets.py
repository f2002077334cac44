"""Kedro datasets that kedro-datasets does not provide.

- :class:`NpyDataset`: a NumPy array in ``.npy`` format, memory-mapped on load so that training
  reads the decode-once image cache without holding it all in memory.
- :class:`TorchDataset`: any object ``torch.save`` can write (checkpoints, state dicts).

Both write atomically (temporary file, then rename), so a killed run never leaves a half-written
file that a later run would trust.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

from qsight_pipeline.storage import atomic_torch_save, atomic_write


class NpyDataset(AbstractDataset[np.ndarray, np.ndarray]):
    """A ``.npy`` file; ``mmap_mode`` (default ``"r"``) is passed to :func:`numpy.load`."""

    def __init__(self, filepath: str, mmap_mode: str | None = "r", metadata: dict | None = None):
        self._filepath = PurePosixPath(filepath)
        self._mmap_mode = mmap_mode
        self.metadata = metadata

    def load(self) -> np.ndarray:
        path = Path(self._filepath)
        if not path.is_file():
            raise DatasetError(
                f"Array file {path} does not exist. Run the pipeline that writes it first "
                "(for the image cache: `kedro run --pipeline ingestion`)."
            )
        return np.load(path, mmap_mode=self._mmap_mode, allow_pickle=False)

    def save(self, data: np.ndarray) -> None:
        atomic_write(self._filepath, lambda handle: np.save(handle, np.asarray(data), allow_pickle=False))

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "mmap_mode": self._mmap_mode}


class TorchDataset(AbstractDataset[Any, Any]):
    """A file written by ``torch.save``; loaded with ``weights_only=True`` unless told otherwise."""

    def __init__(self, filepath: str, weights_only: bool = True, metadata: dict | None = None):
        self._filepath = PurePosixPath(filepath)
        self._weights_only = weights_only
        self.metadata = metadata

    def load(self) -> Any:
        import torch

        path = Path(self._filepath)
        if not path.is_file():
            raise DatasetError(
                f"Checkpoint {path} does not exist. Run the pipeline that writes it first, "
                "or point `output_dir` at the folder of an earlier run."
            )
        return torch.load(path, map_location="cpu", weights_only=self._weights_only)

    def save(self, data: Any) -> None:
        atomic_torch_save(data, self._filepath)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "weights_only": self._weights_only}
