"""The issue's attacks and accidents, replayed through `kedro run` on a copy of the smoke run:
a crafted feature cache, an interrupted ingestion, a classical model retrained alone, two runs at
once, and the leftovers of a killed run."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest
import torch

from tests.conftest import plant_look_alikes
from tests.fixtures import warm_python
from tests.test_run_options import _stage_metrics

OUTPUT_DIR = "06_models/trained_model"


class Shell:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _output(result) -> str:
    return result.stdout + result.stderr


def kill_with_wandb_folder(project):
    """A QSight process with a W&B run folder, SIGKILLed; and a W&B folder it did not make."""
    wandb = project.path / "wandb"
    killed, kept = wandb / "offline-run-20261203_101010-abcd1234", wandb / "offline-run-20261203_090909-zzzz9999"
    for folder in (killed, kept):
        (folder / "files").mkdir(parents=True)
        (folder / "run-abcd.wandb").write_text("log")
    code = ("import os, time; from qsight_pipeline.files import storage; "
            f"storage.journal_directory({str(killed)!r}); os.write(1, b'started\\n'); time.sleep(60)")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=project.path,
                               env=project.environment(), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "started"
    finally:
        process.kill()
        process.wait()
    return killed, kept


def kill_during_writes(project, targets):
    """SIGKILL a QSight process while it writes ``targets`` (relative to ``project``); returns
    the temporary files it left behind."""
    code = (
        "import os, sys, time; from qsight_pipeline.files.storage import atomic_write\n"
        "def stall(handle):\n"
        "    handle.write(b'partial'); handle.flush(); os.write(1, b'writing\\n'); time.sleep(120)\n"
        "import threading\n"
        f"for target in {targets!r}:\n"
        "    threading.Thread(target=atomic_write, args=(target, stall), daemon=True).start()\n"
        "time.sleep(120)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], cwd=project.path,
                              env=project.environment(), stdout=subprocess.PIPE, text=True)
    try:
        for _ in targets:
            assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.kill()
        writer.wait()
    left = [path for target in targets
            for path in (project.path / target).parent.glob(".*.qsight-*.tmp*")]
    assert len(left) == len(targets)
    return left


def test_a_crafted_feature_cache_runs_no_code_and_fails_the_run(smoke_copy):
    path = smoke_copy.data(f"{OUTPUT_DIR}/quantum_training_data.pkl")
    with path.open("rb") as handle:
        cache = pickle.load(handle)
    cache["metadata"]["note"] = Shell()
    with path.open("wb") as handle:
        pickle.dump(cache, handle)

    result = smoke_copy.run("--pipelines", "quantum", env="smoke", check=False)
    assert result.returncode != 0
    assert not (smoke_copy.path / "PWNED").exists()
    assert f"{path} contains a `posix.system` object" in _output(result)
    assert "Error: " in _output(result)


@pytest.mark.slow
def test_a_crafted_classical_model_runs_no_code_and_ends_the_run_with_one_line(smoke_copy):
    path = smoke_copy.data(f"{OUTPUT_DIR}/phase1_classical_model.pth")
    torch.save({"format": "x", "model_config": {}, "model_state": Shell()}, path)

    result = smoke_copy.run("--pipelines", "features", env="smoke", check=False)
    assert result.returncode != 0
    assert not (smoke_copy.path / "PWNED").exists()
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert f"{path} holds a `posix.system` object" in errors[0]
    assert "Do not load it with torch.load(weights_only=False)" in errors[0]
    assert "Rebuild it with `kedro run --pipelines classical`" in errors[0]
    assert "Traceback" not in _output(result)
    assert "Failed while loading data" not in _output(result)
    assert "will likely succeed" not in _output(result)  # torch's advice to load it unsafely


def test_a_manifest_from_another_ingestion_is_refused(smoke_copy):
    # What a kill between the manifest save and the cache saves used to leave behind.
    manifest_path = smoke_copy.data("03_primary/manifest.csv")
    manifest = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    manifest["ingestion_id"] = "ing-0123456789abcdef0000"
    manifest.to_csv(manifest_path, index=False)
    model = smoke_copy.data(f"{OUTPUT_DIR}/phase1_classical_model.pth")
    before = model.read_bytes()

    result = smoke_copy.run("--pipelines", "classical", env="smoke", check=False)
    output = _output(result)
    assert result.returncode != 0
    assert "data/03_primary/manifest.csv and data/05_model_input/image_cache_train.npy" in output
    assert "come from different runs" in output and "`kedro run --pipelines ingestion`" in output
    assert model.read_bytes() == before


def test_a_classical_model_retrained_alone_is_not_mixed_into_the_final_model(smoke_copy):
    smoke_copy.run("--pipelines", "classical", env="smoke", params={"run.seed": 7})
    final = smoke_copy.data(f"{OUTPUT_DIR}/complete_checkpoint.pth")
    before = final.read_bytes()

    result = smoke_copy.run("--pipelines", "quantum,ensemble", env="smoke", check=False)
    output = _output(result)
    assert result.returncode != 0
    assert "phase1_classical_model.pth and" in output and "quantum_training_data.pkl come from" in output
    assert "`kedro run --pipelines features,quantum,ensemble`" in output
    assert final.read_bytes() == before


def test_a_second_run_is_refused_while_one_runs_and_leftovers_are_cleaned(smoke_copy):
    import mlflow

    holder = subprocess.Popen(  # stands in for a long first run: holds the project's run lock
        [sys.executable, "-c",
         "import time; from qsight_pipeline.kedro_app.run_guard import RunLock; "
         "RunLock('data').acquire('kedro run --params output_dir=data/exp1'); "
         "print('locked', flush=True); time.sleep(120)"],
        cwd=smoke_copy.path, env=smoke_copy.environment(), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = smoke_copy.run("--pipelines", "quantum", env="smoke", check=False,
                                 params={"run.output_dir": "data/exp2"})
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode != 0
    assert f"Another run of this project is in progress (pid {holder.pid}" in _output(refused)
    assert "kedro run --params output_dir=data/exp1" in _output(refused)
    assert not smoke_copy.data("exp2").exists()

    # A QSight process killed in the middle of two writes leaves its temporary files and its
    # journal; look-alike files of the user's, at several depths, must survive the clean-up.
    leftovers = kill_during_writes(smoke_copy, ["data/03_primary/manifest.csv",
                                                f"data/{OUTPUT_DIR}/quantum_head.pth"])
    look_alikes = plant_look_alikes(smoke_copy.data(OUTPUT_DIR)) + plant_look_alikes(
        smoke_copy.data("03_primary"))
    client = mlflow.MlflowClient(f"sqlite:///{smoke_copy.path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("qsight")
    killed = client.create_run(experiment.experiment_id, tags={"qsight.pid": str(holder.pid)})
    artifacts = Path(unquote(urlparse(killed.info.artifact_uri).path)) / "report"
    artifacts.mkdir(parents=True)
    upload = artifacts / ".artifact.uploading.k3j4h5z"  # MLflow's staging file of a killed upload
    finished = artifacts / "report.html"
    upload.write_text("half")
    finished.write_text("whole")
    wandb_killed, wandb_kept = kill_with_wandb_folder(smoke_copy)

    photos = smoke_copy.path / "photos"  # the cheapest pipeline: grade two images
    photos.mkdir()
    for source in sorted(smoke_copy.data("01_raw/sample").rglob("*.jpeg"))[:2]:
        (photos / source.name).write_bytes(source.read_bytes())
    smoke_copy.run("--pipelines", "predict", env="smoke", params={"predict.input_dir": str(photos)})
    assert leftovers and not any(path.exists() for path in leftovers)
    assert not upload.exists() and finished.read_text() == "whole"
    assert not wandb_killed.exists() and wandb_kept.is_dir()
    assert all(path.read_text() == "mine" for path in look_alikes)
    assert client.get_run(killed.info.run_id).info.status == "FAILED"
    assert client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") == []


@pytest.mark.slow
def test_sigterm_during_training_stops_cleanly_and_the_run_resumes(smoke_project, smoke_copy):
    """A scheduler stops the job with SIGTERM in the middle of the classical stage; the same
    command then resumes it, continuing rather than restarting, and ends with the numbers of the
    uninterrupted run. (The shared run's ingested data is reused: ingestion is not what a SIGTERM
    in training can break, and the classical pipeline alone writes a model. A SIGKILL at each
    epoch of two stages is tests/test_resume.py.)"""
    import mlflow

    params = "run.checkpoint_dir=data/checkpoints,tracking.wandb.enabled=false"
    command = [sys.executable, "-m", "kedro", "run", "--env", "smoke", "--pipelines", "classical",
               "--params", params]
    model = smoke_copy.data(f"{OUTPUT_DIR}/phase1_classical_model.pth")
    before, written = model.read_bytes(), model.stat().st_mtime_ns
    run = subprocess.Popen(command, cwd=smoke_copy.path, env=smoke_copy.environment(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = smoke_copy.data("checkpoints")
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("stage_classical_epoch_*.pth")):
        assert run.poll() is None and time.monotonic() < deadline, "no epoch checkpoint appeared"
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=120)

    assert run.returncode != 0
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert errors == [line for line in errors if "Stopped by SIGTERM in node `classical.train_classical" in line]
    assert len(errors) == 1 and "Traceback" not in stderr
    client = mlflow.MlflowClient(f"sqlite:///{smoke_copy.path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("qsight")
    newest = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    assert newest[0].info.status == "KILLED"
    assert model.read_bytes() == before and model.stat().st_mtime_ns == written  # untouched

    resumed = warm_python.run(command, smoke_copy.path, smoke_copy.environment(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from checkpoint of stage 'classical'" in resumed.stdout + resumed.stderr
    assert model.stat().st_mtime_ns > written  # the resumed run committed its own model
    history = "08_reporting/classical_history.json"
    assert (_stage_metrics(json.loads(smoke_copy.data(history).read_text()))
            == _stage_metrics(json.loads(smoke_project.data(history).read_text())))


@pytest.mark.slow
def test_a_second_run_writing_to_the_same_output_dir_is_refused(smoke_copy, tmp_path):
    shared = tmp_path / "shared_outputs"
    holder = subprocess.Popen(  # another copy of the project, writing to the same folder
        [sys.executable, "-c",
         "import time; from qsight_pipeline.kedro_app.run_guard import RunLock; "
         f"RunLock({str(shared)!r}).acquire('kedro run --params output_dir={shared}'); "
         "print('locked', flush=True); time.sleep(120)"],
        cwd=tmp_path, env=smoke_copy.environment(), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = smoke_copy.run("--pipelines", "quantum", env="smoke", check=False,
                                 params={"run.output_dir": str(shared)})
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode != 0
    errors = [line for line in refused.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert f"Another run is writing to {shared} (pid {holder.pid}" in errors[0]
    assert not any(shared.glob("*.pth"))


FULL_DISK_RUN = """
import errno, sys
from qsight_pipeline.files import storage
real = storage.atomic_write
def full(path, write, staged=True):  # the disk fills up while the final checkpoint is written
    if str(path).endswith("complete_checkpoint.pth"):
        def write_some(handle):
            handle.write(b"x" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write_some, staged)
    return real(path, write, staged)
storage.atomic_write = full
sys.argv = ["kedro", "run", "--env", "smoke", "--pipelines", "ensemble",
            "--params", "tracking.wandb.enabled=false"]
from kedro.framework.cli import main
main()
"""


@pytest.mark.slow
def test_a_full_disk_ends_in_one_line_and_leaves_the_previous_set_whole(smoke_copy):
    out = smoke_copy.data(OUTPUT_DIR)
    before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    result = warm_python.run([sys.executable, "-c", FULL_DISK_RUN], smoke_copy.path,
                             smoke_copy.environment(), timeout=600)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: No space left on device while writing {out.resolve()}"
                      f"/complete_checkpoint.pth. " + errors[0].split(". ", 1)[1]]
    assert "Traceback" not in result.stderr and "inline_container" not in result.stderr
    after = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    assert after == before  # calibration.json included: nothing of the failed run was kept
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".qsight_run.lock"]


@pytest.mark.slow
def test_a_failing_run_pointed_at_a_users_folder_deletes_nothing(kedro_project, tmp_path):
    """The issue's case: `--pipelines predict` with output_dir at a folder of the user's that holds
    no model fails (rc 1), and every file in it, look-alikes of temporary files included, stays."""
    user = tmp_path / "u"
    look_alikes = plant_look_alikes(user)
    photos = tmp_path / "photos"
    photos.mkdir()
    source = sorted(kedro_project.data("01_raw/sample").rglob("*.jpeg"))[0]
    (photos / source.name).write_bytes(source.read_bytes())
    result = kedro_project.run("--pipelines", "predict", env="smoke", check=False,
                               params={"run.output_dir": str(user), "predict.input_dir": str(photos)})
    assert result.returncode != 0
    assert "complete_checkpoint.pth does not exist" in result.stderr
    assert all(path.read_text() == "mine" for path in look_alikes)
    assert sorted(p.name for p in user.rglob("*") if p.is_file()) == sorted(
        [p.name for p in look_alikes] + [".qsight_run.lock"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plant_forged_index(folder: Path, victims: Path, legacy: bool = False) -> dict[Path, bytes]:
    """A forged and stale ``.qsight-files.json`` in ``folder``: an absolute path, a ``../`` path
    and a subfolder path to a user's files, each with its true hash, and a name of the folder
    whose file the user has changed since the project wrote it. Returns {file: content}."""
    folder.mkdir(parents=True, exist_ok=True)
    victims.mkdir(parents=True, exist_ok=True)
    absolute, beside = victims / "absolute.txt", folder.parent / f"beside_{folder.name}.txt"
    nested, changed = folder / "sub" / "nested.png", folder / "changed.png"
    nested.parent.mkdir(exist_ok=True)
    for path in (absolute, beside, nested, changed):
        path.write_bytes(f"the user's own {path.name}".encode())
    files = {str(absolute): _sha256(absolute), f"../{beside.name}": _sha256(beside),
             "sub/nested.png": _sha256(nested),
             changed.name: hashlib.sha256(b"what the project once wrote").hexdigest()}
    index = {"files": list(files)} if legacy else {"format": 2, "files": files}
    (folder / ".qsight-files.json").write_text(json.dumps(index))
    return {path: path.read_bytes() for path in (absolute, beside, nested, changed)}


@pytest.mark.slow
def test_forged_and_stale_file_indexes_delete_nothing_in_predict_export_and_an_ensemble_run(
        smoke_copy, tmp_path):
    """Every folder with an index (heatmaps, output_dir, the report's figures) gets a forged one;
    `predict` with heatmaps, `export` and the ensemble pipeline (which writes the final model in
    output_dir and the report's figures) then leave every planted file."""
    planted: dict[Path, bytes] = {}
    folders = {"heatmaps": smoke_copy.data("07_model_output/heatmaps"),
               "output_dir": smoke_copy.data(OUTPUT_DIR),
               "figures": smoke_copy.data("08_reporting/figures")}
    for name, folder in folders.items():
        planted |= _plant_forged_index(folder, tmp_path / "victims" / name,
                                       legacy=name == "figures")
    photos = tmp_path / "photos"
    photos.mkdir()
    for source in sorted(smoke_copy.data("01_raw/sample").rglob("*.jpeg"))[:2]:
        (photos / source.name).write_bytes(source.read_bytes())

    def survived() -> bool:
        return all(path.is_file() and path.read_bytes() == content
                   for path, content in planted.items())

    smoke_copy.run("--pipelines", "predict", env="smoke",
                   params={"predict.input_dir": str(photos), "predict.heatmaps": "true"})
    assert survived()
    assert len(list(folders["heatmaps"].glob("*.png"))) >= 3  # two heatmaps and the user's file
    smoke_copy.run("--pipelines", "export", env="smoke")
    assert survived()
    result = smoke_copy.run("--pipelines", "ensemble", env="smoke")
    assert survived()
    assert "cannot be proven" in _output(result)  # the entries left alone are logged
    written = json.loads((folders["figures"] / ".qsight-files.json").read_text())["files"]
    assert written and all(_sha256(folders["figures"] / name) == digest  # the proof of the
                           for name, digest in written.items())      # next run's clean-up


@pytest.mark.slow
def test_a_link_or_a_users_file_at_a_lock_path_stops_the_run_untouched(kedro_project, tmp_path):
    """The issue's case (a link at output_dir's lock to a user's file), and a user's own file
    named like the lock in data/ and in checkpoint_dir: each run stops with one line, and the
    user's file keeps its content."""
    users = tmp_path / "users_file.txt"
    users.write_text("data\n")
    out, checkpoints = tmp_path / "o", tmp_path / "ckpt"
    cases = [(out, {"run.output_dir": str(out)}, "a symbolic link"),
             (kedro_project.path / "data", {}, "its content is not a lock record"),
             (checkpoints, {"run.checkpoint_dir": str(checkpoints)},
              "its content is not a lock record")]
    for folder, params, kind in cases:
        folder.mkdir(exist_ok=True)
        lock = folder / ".qsight_run.lock"
        if kind == "a symbolic link":
            lock.symlink_to(users)
        else:
            lock.write_text("my notes\n")
        result = kedro_project.run("--pipelines", "predict", check=False, params=params or None)
        assert result.returncode != 0
        assert f"Error: {lock} is not a QSight run lock ({kind})" in result.stderr
        assert "Traceback" not in result.stderr
        if lock.is_symlink():
            assert users.read_text() == "data\n"  # not emptied through the link
        else:
            assert lock.read_text() == "my notes\n"
        lock.unlink()  # the next case finds this folder free
