"""The issue's attacks and accidents, replayed through `kedro run` on a copy of the smoke run:
a crafted feature cache, an interrupted ingestion, a classical model retrained alone, two runs at
once, and the leftovers of a killed run."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pandas as pd
import pytest
import torch

OUTPUT_DIR = "06_models/trained_model"


class Shell:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _output(result) -> str:
    return result.stdout + result.stderr


def test_a_crafted_feature_cache_runs_no_code_and_fails_the_run(smoke_copy):
    path = smoke_copy.data(f"{OUTPUT_DIR}/quantum_training_data.pkl")
    with path.open("rb") as handle:
        cache = pickle.load(handle)
    cache["metadata"]["note"] = Shell()
    with path.open("wb") as handle:
        pickle.dump(cache, handle)

    result = smoke_copy.run("--pipeline", "quantum", env="smoke", check=False)
    assert result.returncode != 0
    assert not (smoke_copy.path / "PWNED").exists()
    assert f"{path} contains a `posix.system` object" in _output(result)
    assert "Error: " in _output(result)


@pytest.mark.slow
def test_a_crafted_classical_model_runs_no_code_and_ends_the_run_with_one_line(smoke_copy):
    path = smoke_copy.data(f"{OUTPUT_DIR}/phase1_classical_model.pth")
    torch.save({"format": "x", "model_config": {}, "model_state": Shell()}, path)

    result = smoke_copy.run("--pipeline", "features", env="smoke", check=False)
    assert result.returncode != 0
    assert not (smoke_copy.path / "PWNED").exists()
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert f"{path} holds a `posix.system` object" in errors[0]
    assert "Do not load it with torch.load(weights_only=False)" in errors[0]
    assert "Rebuild it with `kedro run --pipeline classical`" in errors[0]
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

    result = smoke_copy.run("--pipeline", "classical", env="smoke", check=False)
    output = _output(result)
    assert result.returncode != 0
    assert "data/03_primary/manifest.csv and data/05_model_input/image_cache_train.npy" in output
    assert "come from different runs" in output and "`kedro run --pipeline ingestion`" in output
    assert model.read_bytes() == before


def test_a_classical_model_retrained_alone_is_not_mixed_into_the_final_model(smoke_copy):
    smoke_copy.run("--pipeline", "classical", env="smoke", params={"seed": 7})
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
         "import time; from qsight_pipeline.run_guard import RunLock; "
         "RunLock('data').acquire('kedro run --params output_dir=data/exp1'); "
         "print('locked', flush=True); time.sleep(120)"],
        cwd=smoke_copy.path, env=smoke_copy.environment(), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = smoke_copy.run("--pipeline", "quantum", env="smoke", check=False,
                                 params={"output_dir": "data/exp2"})
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode != 0
    assert f"Another run of this project is in progress (pid {holder.pid}" in _output(refused)
    assert "kedro run --params output_dir=data/exp1" in _output(refused)
    assert not smoke_copy.data("exp2").exists()

    leftovers = [smoke_copy.data("03_primary/.manifest.1a2b3c4d.tmp.csv"),
                 smoke_copy.data(f"{OUTPUT_DIR}/.quantum_head.pth.x8y9z0.tmp")]
    for path in leftovers:
        path.write_bytes(b"")
    client = mlflow.MlflowClient(f"sqlite:///{smoke_copy.path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("qsight")
    killed = client.create_run(experiment.experiment_id, tags={"qsight.pid": str(holder.pid)})

    photos = smoke_copy.path / "photos"  # the cheapest pipeline: grade two images
    photos.mkdir()
    for source in sorted(smoke_copy.data("01_raw/sample").rglob("*.jpeg"))[:2]:
        (photos / source.name).write_bytes(source.read_bytes())
    smoke_copy.run("--pipeline", "predict", env="smoke", params={"predict.input_dir": str(photos)})
    assert not any(path.exists() for path in leftovers)
    assert client.get_run(killed.info.run_id).info.status == "FAILED"
    assert client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") == []
