"""A damaged or crafted file of any kind the project reads is refused with one line that names
it, says not to load it unsafely and which run rebuilds it; nothing in it runs (unit level; the
`kedro run` replay is in test_run_safety_end_to_end)."""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys

import numpy as np
import pytest
import torch
from kedro.io import DataCatalog, DatasetError

from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.files.safe_files import CorruptArtifactError, rebuild_command, safe_torch_load
from qsight_pipeline.inference import load_model
from qsight_pipeline.kedro_app import user_errors
from qsight_pipeline.kedro_app.datasets import (
    AtomicDataset,
    NpyDataset,
    SafePickleDataset,
    TorchDataset,
)
from qsight_pipeline.training.checkpoints import find_resume_checkpoint
from qsight_pipeline.training.stages import parse_stages

# What torch's and NumPy's own messages say; none of it may reach the user.
READER_ADVICE = ("will likely succeed", "`weights_only` set to `False`", "load it unsafely",
                 "allow_pickle=` keyword", "Weights only load failed")


class Shell:
    """What a crafted file plants: loading it unsafely calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _random_bytes(path, marker):
    path.write_bytes(np.random.default_rng(0).bytes(3000))


def _empty(path, marker):
    path.write_bytes(b"")


def _truncated_torch(path, marker):
    torch.save({"format": "x", "model_state": {"w": torch.ones(64)}}, path)
    path.write_bytes(path.read_bytes()[:200])


def _raw_pickle(path, marker):
    path.write_bytes(pickle.dumps({"model_state": Shell(marker)}))


def _crafted_torch(path, marker):
    torch.save({"format": "x", "model_config": {}, "model_state": Shell(marker)}, path)


def _assert_one_safe_line(message: str, path, rebuild: str) -> None:
    assert str(path) in message and "\n" not in message
    assert rebuild in message
    assert not any(advice in message for advice in READER_ADVICE), message


@pytest.mark.parametrize("attack", [_random_bytes, _empty, _truncated_torch, _raw_pickle, _crafted_torch])
def test_a_damaged_or_crafted_pth_is_one_error_and_runs_nothing(tmp_path, attack):
    marker = tmp_path / "PWNED"
    path = tmp_path / "phase1_classical_model.pth"
    attack(path, marker)
    catalog = DataCatalog({"phase1_classical_model": TorchDataset(str(path), ["format", "model_state"])})
    with pytest.raises(DatasetError) as info:
        catalog.load("phase1_classical_model")
    assert not marker.exists()
    found = user_errors.find_user_error(info.value)
    assert isinstance(found, ArtifactError)
    assert found is info.value or found is info.value.__cause__  # Kedro did not wrap it again
    assert "Failed while loading data" not in str(info.value)  # Kedro's wrapper
    _assert_one_safe_line(str(found), path, "kedro run --pipelines classical")
    assert "weights_only=False" in str(found)  # the unsafe way it warns against
    if attack is _crafted_torch:
        assert "posix.system" in str(found)  # the offending object


def test_a_pth_without_the_expected_contents_is_refused_naming_the_keys(tmp_path):
    path = tmp_path / "quantum_head.pth"
    torch.save({"format": "x"}, path)
    with pytest.raises(ArtifactError, match="`enabled`") as info:
        TorchDataset(str(path), ["format", "enabled"]).load()
    assert str(path) in str(info.value)
    torch.save([torch.ones(2)], path)
    with pytest.raises(ArtifactError) as info:
        TorchDataset(str(path), ["format"]).load()
    assert str(path) in str(info.value) and rebuild_command(path) in str(info.value)


def _object_array(path, marker):
    np.save(path, np.array([Shell(marker), None], dtype=object), allow_pickle=True)


def _truncated_npy(path, marker):
    np.save(path, np.zeros((4, 8, 8, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:200])


def _npz(path, marker):
    with path.open("wb") as handle:
        np.savez(handle, a=np.zeros(3))


@pytest.mark.parametrize("mmap_mode", ["r", None])
@pytest.mark.parametrize("attack", [_object_array, _truncated_npy, _random_bytes, _raw_pickle, _empty, _npz])
def test_a_damaged_or_crafted_npy_is_one_error_and_runs_nothing(tmp_path, attack, mmap_mode):
    marker = tmp_path / "PWNED"
    path = tmp_path / "image_cache_train.npy"
    attack(path, marker)
    with pytest.raises(ArtifactError) as info:
        NpyDataset(str(path), mmap_mode=mmap_mode).load()
    assert isinstance(info.value, DatasetError) and not marker.exists()
    _assert_one_safe_line(str(info.value), path, "kedro run --pipelines ingestion")
    if attack is not _npz:
        assert "allow_pickle=True" in str(info.value)  # the unsafe way it warns against


def _truncated_pickle(path, marker):
    path.write_bytes(pickle.dumps({"train_features": np.zeros((40, 8), np.float32)})[:150])


@pytest.mark.parametrize("attack", [_random_bytes, _empty, _truncated_pickle])
def test_a_damaged_feature_cache_is_one_error(tmp_path, attack):
    path = tmp_path / "quantum_training_data.pkl"
    attack(path, tmp_path / "PWNED")
    with pytest.raises(ArtifactError) as info:
        SafePickleDataset(str(path)).load()
    assert isinstance(info.value, DatasetError)
    _assert_one_safe_line(str(info.value), path, "kedro run --pipelines classical,features")
    assert "pickle.load" in str(info.value)  # the unsafe way it warns against


@pytest.mark.parametrize("content", [b"\x82\x00garbage", b'{"stages": [1, 2', b""])
def test_a_damaged_json_artifact_is_one_error_naming_its_pipeline(tmp_path, content):
    path = tmp_path / "classical_history.json"
    path.write_bytes(content)
    with pytest.raises(ArtifactError) as info:
        AtomicDataset(str(path), "json.JSONDataset").load()
    assert isinstance(info.value, DatasetError)
    _assert_one_safe_line(str(info.value), path, "kedro run --pipelines classical")


def test_every_artifact_name_knows_its_pipeline():
    assert rebuild_command("out/complete_checkpoint.pth") == "kedro run --pipelines ensemble"
    assert rebuild_command("out/calibration.json") == "kedro run --pipelines ensemble"
    assert rebuild_command("x/image_cache_test.npy") == "kedro run --pipelines ingestion"
    assert rebuild_command("x/quantum_history.json") == "kedro run --pipelines quantum"
    assert rebuild_command("x/quantum_study_summary.json") == "kedro run --pipelines quantum_study"
    assert rebuild_command("x/model_onnx_info.json") == "kedro run --pipelines export"


def test_the_printed_error_is_one_line_without_a_traceback(tmp_path, monkeypatch, capsys):
    path = tmp_path / "complete_checkpoint.pth"
    _crafted_torch(path, tmp_path / "PWNED")
    catalog = DataCatalog({"complete_checkpoint": TorchDataset(str(path))})
    try:
        catalog.load("complete_checkpoint")
    except DatasetError as caught:
        error = caught
    monkeypatch.setattr(sys, "excepthook", lambda *args: pytest.fail("delegated to a traceback"))
    monkeypatch.delenv("QSIGHT_TRACEBACK", raising=False)
    user_errors.install()
    sys.excepthook(type(error), error, error.__traceback__)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line for line in lines if line.startswith("Error:")] == lines[:1]
    assert lines[0].startswith(f"Error: {path} holds a `posix.system` object")
    assert lines[1:] == ["(Set QSIGHT_TRACEBACK=1 to see the full traceback.)"]
    # The reader's message stays in the chain, for the traceback only.
    assert any(isinstance(e, pickle.UnpicklingError) for e in _chain(error))


def _chain(error):
    while error is not None:
        yield error
        error = error.__cause__


# --------------------------------------------------------------------------- Python API


def test_load_model_refuses_a_crafted_checkpoint_without_running_it(tmp_path):
    marker = tmp_path / "PWNED"
    _crafted_torch(tmp_path / "complete_checkpoint.pth", marker)
    with pytest.raises(CorruptArtifactError) as info:
        load_model(tmp_path)
    assert not marker.exists()
    message = str(info.value)
    _assert_one_safe_line(message, tmp_path / "complete_checkpoint.pth", "kedro run --pipelines ensemble")
    assert "save_model" in message and "posix.system" in message
    assert info.value.__cause__ is not None  # torch's error, for QSIGHT_TRACEBACK=1 only


@pytest.mark.parametrize("attack", [_random_bytes, _empty, _truncated_torch])
def test_load_model_refuses_a_damaged_checkpoint(tmp_path, attack):
    attack(tmp_path / "complete_checkpoint.pth", tmp_path / "PWNED")
    with pytest.raises(CorruptArtifactError) as info:
        load_model(tmp_path)
    assert str(tmp_path / "complete_checkpoint.pth") in str(info.value)
    assert not any(advice in str(info.value) for advice in READER_ADVICE)


def test_load_model_refuses_a_damaged_model_info(tmp_path):
    torch.save({"model_config": {}, "model_state": {}, "model_info": {}}, tmp_path / "complete_checkpoint.pth")
    (tmp_path / "model_info.json").write_text('{"preprocessing": ')
    with pytest.raises(CorruptArtifactError, match=r"model_info\.json") as info:
        load_model(tmp_path)
    assert rebuild_command("model_info.json") in str(info.value)
    (tmp_path / "model_info.json").write_text(json.dumps([1, 2]))
    with pytest.raises(CorruptArtifactError, match=r"model_info\.json"):
        load_model(tmp_path)


def test_load_model_refuses_a_checkpoint_it_cannot_rebuild(tmp_path):
    torch.save({"model_config": {"no_such_setting": 1}, "model_state": {}, "model_info": {}},
               tmp_path / "complete_checkpoint.pth")
    with pytest.raises(CorruptArtifactError, match="complete_checkpoint.pth") as info:
        load_model(tmp_path)
    assert rebuild_command("complete_checkpoint.pth") in str(info.value)


# --------------------------------------------------------------------------- resume checkpoints


def test_a_damaged_stage_checkpoint_is_skipped_without_the_readers_advice(tmp_path, caplog):
    (tmp_path / "stage_classical_epoch_1.pth").write_bytes(np.random.default_rng(0).bytes(500))
    with caplog.at_level(logging.WARNING):
        found = find_resume_checkpoint(tmp_path, parse_stages([{"name": "classical", "num_epochs": 1}]), "fp")
    assert found is None
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("stage_classical_epoch_1.pth" in r.getMessage() for r in warned)
    assert not any(advice in caplog.text for advice in READER_ADVICE)


def test_safe_torch_load_keeps_memory_mapping(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"w": torch.arange(4.0)}, path)
    assert torch.equal(safe_torch_load(path, mmap=True)["w"], torch.arange(4.0))
    path.write_bytes(b"\x80\x04K\x01.")  # a pickle: no zip archive to map
    with pytest.raises(CorruptArtifactError, match=r"model\.pth"):
        safe_torch_load(path, mmap=True)
