"""Nothing a user receives runs code; artifacts of different origins are never combined;
killed runs leave nothing that a later run trusts (unit level; see test_run_safety_end_to_end)."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.files import lineage
from qsight_pipeline.files.safe_pickle import safe_load, safe_loads
from qsight_pipeline.kedro_app.datasets import NpyDataset, SafePickleDataset
from qsight_pipeline.kedro_app.run_guard import LOCK_NAME, LockPathError, RunLock, RunLockedError


class Shell:
    """What a malicious cache plants: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def feature_cache() -> dict:
    rng = np.random.default_rng(0)
    return {
        "train_features": rng.normal(size=(6, 4)).astype(np.float32),
        "train_labels": np.arange(6, dtype=np.int64) % 5,
        "train_image_ids": [f"{i}_left" for i in range(6)],
        "metadata": {"classes": ["No DR", "Mild"], "seed": 42, "pretrained": False,
                     "model_config": {"quantum": {"shots": None}, "dims": (4, 5)},
                     "lineage": {"ingestion_id": "ing-1", "classical_id": "cls-1"}},
        "post_compression_state": {"head_a.0.weight": rng.normal(size=(5, 4)).astype(np.float32),
                                   "ensemble.step": np.int64(3)},
    }


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_data_and_numpy_arrays_load_with_every_protocol(protocol):
    cache = feature_cache()
    loaded = safe_loads(pickle.dumps(cache, protocol=protocol))
    np.testing.assert_array_equal(loaded["train_features"], cache["train_features"])
    assert loaded["train_labels"].dtype == np.int64
    assert loaded["metadata"] == cache["metadata"]
    assert loaded["post_compression_state"]["ensemble.step"] == 3


def test_a_planted_object_is_refused_without_running(tmp_path):
    marker = tmp_path / "PWNED"
    cache = feature_cache()
    cache["metadata"]["note"] = Shell(marker)
    path = tmp_path / "quantum_training_data.pkl"
    path.write_bytes(pickle.dumps(cache))
    with pytest.raises(ArtifactError) as info:
        safe_load(path)
    assert not marker.exists()
    assert str(path) in str(info.value) and "`posix.system`" in str(info.value)


def test_torch_tensors_are_refused_too(tmp_path):
    # torch's tensor unpickling can reach torch.load(weights_only=False) on embedded bytes.
    with pytest.raises(ArtifactError, match="torch._utils._rebuild_tensor_v2"):
        safe_loads(pickle.dumps({"w": torch.zeros(2)}), "cache.pkl")


def test_a_truncated_file_is_an_artifact_error_naming_it(tmp_path):
    path = tmp_path / "quantum_training_data.pkl"
    path.write_bytes(pickle.dumps(feature_cache())[:100])
    with pytest.raises(ArtifactError, match=re.escape(str(path))):
        safe_load(path)


def test_the_feature_cache_stays_a_plain_pickle(tmp_path):
    path = tmp_path / "quantum_training_data.pkl"
    SafePickleDataset(str(path)).save(feature_cache())
    with path.open("rb") as handle:  # what the guide tells users to do in a notebook
        plain = pickle.load(handle)
    assert plain["metadata"]["seed"] == 42
    assert SafePickleDataset(str(path)).load()["train_image_ids"][0] == "0_left"


# --------------------------------------------------------------------------- lineage


def tagged(array, ingestion_id):
    return lineage.tag(array, {"ingestion_id": ingestion_id})


def manifest(ingestion_id="ing-a"):
    return pd.DataFrame({"image_id": ["1", "2"], "ingestion_id": [ingestion_id] * 2})


def test_image_cache_lineage_travels_in_a_sidecar_and_keeps_memory_mapping(tmp_path):
    path = tmp_path / "image_cache_train.npy"
    NpyDataset(str(path)).save(tagged(np.zeros((2, 4, 4, 3), np.uint8), "ing-a"))
    assert json.loads((tmp_path / "image_cache_train.lineage.json").read_text())["ingestion_id"] == "ing-a"
    loaded = NpyDataset(str(path)).load()
    assert isinstance(loaded, np.memmap)
    assert lineage.check_image_caches(manifest(), {"train": loaded}) == "ing-a"
    # An untagged save must not leave the old sidecar vouching for new pixels.
    NpyDataset(str(path)).save(np.ones((2, 4, 4, 3), np.uint8))
    assert lineage.of(NpyDataset(str(path)).load()) is None  # no record, not the old one
    with pytest.raises(lineage.LineageError):
        lineage.check_image_caches(manifest(), {"train": NpyDataset(str(path)).load()})


def test_a_cache_from_another_ingestion_is_refused_naming_both_files():
    cache = tagged(np.zeros((2, 4, 4, 3), np.uint8), "ing-old")
    with pytest.raises(lineage.LineageError) as info:
        lineage.check_image_caches(manifest("ing-new"), {"val": cache})
    message = str(info.value)
    assert "data/03_primary/manifest.csv" in message and "image_cache_val.npy" in message
    assert "ing-new" in message and "ing-old" in message
    assert "`kedro run --pipelines ingestion`" in message


def test_a_classical_model_retrained_after_the_feature_export_is_refused():
    state = {"encoder.w": torch.ones(3)}
    first = lineage.stamp_classical({"model_state": state}, "ing-a")
    second = lineage.stamp_classical({"model_state": {"encoder.w": torch.zeros(3)}}, "ing-a")
    assert first["lineage"]["classical_id"] != second["lineage"]["classical_id"]
    cache = {"metadata": {"lineage": dict(first["lineage"])}}
    assert lineage.classical_for_feature_cache(first, cache, "out")["classical_id"]
    with pytest.raises(lineage.LineageError) as info:
        lineage.classical_for_feature_cache(second, cache, "out")
    message = str(info.value)
    assert "out/phase1_classical_model.pth" in message and "out/quantum_training_data.pkl" in message
    assert "kedro run --pipelines features,quantum,ensemble" in message


def test_artifacts_without_lineage_are_refused_not_trusted():
    with pytest.raises(lineage.LineageError, match=r"out/quantum_training_data\.pkl"):
        lineage.feature_cache_record({"metadata": {}}, "out")
    with pytest.raises(lineage.LineageError, match="`ingestion_id`"):
        lineage.manifest_ingestion_id(pd.DataFrame({"image_id": ["1"]}))


# --------------------------------------------------------------------------- run lock, leftovers


@pytest.mark.slow  # starts a Python subprocess
def test_a_second_lock_is_refused_naming_the_holder_and_a_dead_holder_is_stale(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from qsight_pipeline.kedro_app.run_guard import RunLock; "
         f"RunLock({str(tmp_path)!r}).acquire('kedro run --pipelines classical'); "
         "print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError) as info:
            RunLock(tmp_path).acquire("kedro run")
        assert f"pid {holder.pid}" in str(info.value)
        assert "kedro run --pipelines classical" in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(tmp_path)  # the kernel dropped the dead holder's lock
    lock.acquire("kedro run")
    assert json.loads((tmp_path / ".qsight_run.lock").read_text())["pid"] == os.getpid()
    lock.release()


@pytest.mark.slow  # starts a Python subprocess
def test_a_lock_file_naming_a_dead_process_is_taken_over(tmp_path):
    """A child of a killed run may still hold the lock file open (and flocked) while the record
    inside names its dead parent: the lock is stale and a new run takes over."""
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    record = json.dumps({"pid": int(dead), "host": socket.gethostname(), "command": "x"})
    orphan = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, time; "
         f"fd = os.open({str(tmp_path / '.qsight_run.lock')!r}, os.O_RDWR | os.O_CREAT); "
         f"fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, {record!r}.encode()); "
         "print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert orphan.stdout.readline().strip() == "locked"
        lock = RunLock(tmp_path)
        lock.acquire("kedro run --pipelines quantum")
        holder = json.loads((tmp_path / ".qsight_run.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "kedro run --pipelines quantum"
        lock.release()
    finally:
        orphan.kill()
        orphan.wait()


def _user_file(folder: Path, target: Path) -> Path:
    """A user's file at the lock's path."""
    path = folder / LOCK_NAME
    path.write_text("my notes")
    return target


def _symlink(folder: Path, target: Path) -> Path:
    """A link at the lock's path to a user's file elsewhere."""
    (folder / LOCK_NAME).symlink_to(target)
    return target


def _hard_link(folder: Path, target: Path) -> Path:
    """A second name of a user's file, at the lock's path."""
    os.link(target, folder / LOCK_NAME)
    return target


@pytest.mark.parametrize("plant", [_user_file, _symlink, _hard_link])
@pytest.mark.parametrize("where", ["data", "output_dir", "checkpoint_dir"])
def test_a_lock_path_taken_by_something_else_is_refused_untouched(tmp_path, plant, where):
    folder = tmp_path / where
    folder.mkdir()
    users = tmp_path / "users_file.txt"
    users.write_text("data")
    planted = plant(folder, users)
    before = planted.read_bytes()
    with pytest.raises(LockPathError) as info:
        RunLock(folder).acquire("kedro run")
    message = str(info.value)
    assert str(folder / LOCK_NAME) in message
    assert "\n" not in message
    assert planted.read_bytes() == before  # neither emptied nor written to
    assert (folder / LOCK_NAME).is_symlink() == (plant is _symlink)


def test_a_folder_at_the_lock_path_is_refused(tmp_path):
    (tmp_path / LOCK_NAME).mkdir()
    with pytest.raises(LockPathError, match=re.escape(str(tmp_path / LOCK_NAME))):
        RunLock(tmp_path).acquire("kedro run")


def test_an_empty_released_lock_of_an_older_release_is_reused(tmp_path):
    (tmp_path / LOCK_NAME).write_text("")  # what a released lock looked like before
    lock = RunLock(tmp_path)
    lock.acquire("kedro run")
    try:
        assert lock.holder()["pid"] == os.getpid()
    finally:
        lock.release()
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released: nothing left in it
    lock.acquire("kedro run")  # and taken again
    lock.release()
