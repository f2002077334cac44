"""The project's Kedro datasets: atomic saves and clear messages for missing artifacts."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from kedro.io import DatasetError

from qsight_pipeline.errors import UserError
from qsight_pipeline.kedro_app.datasets import (
    AtomicDataset,
    BinaryFileDataset,
    MissingArtifactError,
    NpyDataset,
    SafePickleDataset,
    TorchDataset,
)


def test_atomic_json_round_trip_leaves_no_temporary_files(tmp_path):
    dataset = AtomicDataset(str(tmp_path / "out" / "model_info.json"), {"type": "json.JSONDataset"})
    dataset.save({"quantum_enabled": True, "classes": ["No DR"]})
    assert dataset.load() == {"quantum_enabled": True, "classes": ["No DR"]}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model_info.json"]


def test_a_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "summary.json"
    dataset = AtomicDataset(str(path), "json.JSONDataset")
    dataset.save({"epoch": 1})
    with pytest.raises(DatasetError):
        dataset.save({"not json": object()})  # the writer fails half way
    assert dataset.load() == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_missing_artifacts_say_what_to_run(tmp_path):
    # Every artifact dataset raises the same user error (an `Error:` line, no traceback), which
    # is still a DatasetError for code that catches Kedro's.
    for dataset in (
        AtomicDataset(str(tmp_path / "model_info.json"), "json.JSONDataset"),
        TorchDataset(str(tmp_path / "complete_checkpoint.pth")),
        SafePickleDataset(str(tmp_path / "quantum_training_data.pkl")),
        BinaryFileDataset(str(tmp_path / "model.onnx")),
    ):
        with pytest.raises(MissingArtifactError, match="does not exist. Run the pipeline that "
                           "writes it") as caught:
            dataset.load()
        assert isinstance(caught.value, UserError) and isinstance(caught.value, DatasetError)
    with pytest.raises(MissingArtifactError, match="kedro run --pipelines ingestion"):
        NpyDataset(str(tmp_path / "image_cache_train.npy")).load()


def test_npy_loads_memory_mapped_and_torch_loads_weights_only(tmp_path):
    cache = NpyDataset(str(tmp_path / "cache.npy"))
    cache.save(np.arange(24, dtype=np.uint8).reshape(1, 2, 4, 3))
    loaded = cache.load()
    assert isinstance(loaded, np.memmap) and loaded.shape == (1, 2, 4, 3)
    checkpoint = TorchDataset(str(tmp_path / "model.pth"))
    previous = os.umask(0o022)
    try:
        checkpoint.save({"model_state": {"w": torch.ones(2)}, "classes": ["No DR"]})
    finally:
        os.umask(previous)
    assert torch.equal(checkpoint.load()["model_state"]["w"], torch.ones(2))
    assert (tmp_path / "model.pth").stat().st_mode & 0o044  # readable beyond the owner
