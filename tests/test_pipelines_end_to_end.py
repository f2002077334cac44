"""The training pipelines end to end through `kedro run`, on the tiny `smoke` environment."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from qsight_pipeline.constants import GRADE_NAMES, NUM_GRADES, SPLITS
from qsight_pipeline.pipelines.predict.nodes import list_images
from qsight_pipeline.training.artifacts import load_complete_checkpoint

ARTIFACTS = (
    "phase1_classical_model.pth",
    "complete_checkpoint.pth",
    "model_info.json",
    "training_summary.json",
    "quantum_training_data.pkl",
)
OUTPUT_DIR = "06_models/trained_model"


def _json(path):
    return json.loads(path.read_text())


def test_default_run_writes_the_guides_five_artifacts_in_one_folder(smoke_project):
    folder = smoke_project.data(OUTPUT_DIR)
    for name in ARTIFACTS:
        assert (folder / name).is_file(), f"{name} missing from {folder}"

    info = _json(folder / "model_info.json")
    assert info["classes"] == list(GRADE_NAMES)
    assert info["num_classes"] == NUM_GRADES
    assert info["compressed_dim"] == 16  # conf/smoke
    assert info["encoder_type"] == "resnet" and info["encoder_name"] == "test_resnet"
    assert info["image_size"] == 32 and info["pretrained"] is False
    assert info["quantum_enabled"] is True
    assert info["quantum_qubits"] == 3 and info["quantum_shots"] is None


def test_training_summary_holds_every_stage_and_every_heads_metrics(smoke_project):
    summary = _json(smoke_project.data(f"{OUTPUT_DIR}/training_summary.json"))
    assert [stage["name"] for stage in summary["stages"]] == ["classical", "quantum", "ensemble"]
    for stage in summary["stages"]:
        assert 1 <= stage["epochs_run"] == len(stage["history"])
        assert stage["best_epoch"] in [record["epoch"] for record in stage["history"]]
    assert summary["best_validation"]["stage"] in {"classical", "quantum", "ensemble"}

    manifest = pd.read_csv(smoke_project.data("03_primary/manifest.csv"))
    for split in ("val", "test"):
        heads = summary["evaluation"][split]
        assert set(heads) == {"head_a", "head_b", "quantum_head", "ensemble"}
        for metrics in heads.values():
            assert metrics["n"] == int((manifest["split"] == split).sum())
            assert np.asarray(metrics["confusion_matrix"]).sum() == metrics["n"]
            assert 0.0 <= metrics["accuracy"] <= 1.0
    assert {"encoder", "compression", "head_a", "head_b", "ensemble"} <= set(summary["latency_ms"])
    for stats in summary["latency_ms"].values():
        assert 0 <= stats["p50"] <= stats["p95"]


def test_complete_checkpoint_loads_with_weights_only_and_rebuilds_the_model(smoke_project):
    checkpoint = torch.load(
        smoke_project.data(f"{OUTPUT_DIR}/complete_checkpoint.pth"), weights_only=True
    )
    assert checkpoint["model_info"]["quantum_enabled"] is True
    assert checkpoint["training_summary"]["stages"][0]["name"] == "classical"
    model = load_complete_checkpoint(checkpoint)
    out = model(torch.zeros(2, 3, 32, 32), active_mask=(1, 1, 1))
    assert out["fused_probs"].shape == (2, NUM_GRADES)
    assert torch.allclose(out["fused_probs"].sum(dim=1), torch.ones(2), atol=1e-5)
    assert out["head_weights"].shape == (2, 3)


def test_feature_cache_has_features_logits_labels_and_the_guides_keys(smoke_project):
    with open(smoke_project.data(f"{OUTPUT_DIR}/quantum_training_data.pkl"), "rb") as handle:
        cache = pickle.load(handle)
    manifest = pd.read_csv(smoke_project.data("03_primary/manifest.csv"))
    for key in ("train_features", "train_labels", "val_features", "val_labels"):
        assert key in cache  # old quantum-only scripts read these names
    for split in SPLITS:
        rows = manifest[manifest["split"] == split].sort_values("cache_index")
        n = len(rows)
        assert cache[f"{split}_features"].shape == (n, 16)
        assert cache[f"{split}_features"].dtype == np.float32
        assert cache[f"{split}_logits_head_a"].shape == (n, NUM_GRADES)
        assert cache[f"{split}_logits_head_b"].shape == (n, NUM_GRADES)
        np.testing.assert_array_equal(cache[f"{split}_labels"], rows["grade"].to_numpy())
        assert cache[f"{split}_image_ids"] == rows["image_id"].astype(str).tolist()
    meta = cache["metadata"]
    assert meta["compressed_dim"] == 16 and meta["classes"] == list(GRADE_NAMES)
    assert meta["encoder_name"] == "test_resnet"
    assert any(key.startswith("ensemble.") for key in cache["post_compression_state"])


def test_quantum_pipeline_needs_only_the_feature_cache(smoke_copy):
    data = smoke_copy.path / "data"
    keep = data / OUTPUT_DIR / "quantum_training_data.pkl"
    saved = keep.read_bytes()
    # Raw images (a link to the repository's sample here), image caches, manifest, the classical
    # model, histories and reports: all gone.
    (data / "01_raw").unlink()
    for layer in data.iterdir():
        if layer.is_dir():  # data/.qsight_run.lock (the run lock) is a file
            shutil.rmtree(layer)
    (data / "01_raw").mkdir(parents=True)
    keep.parent.mkdir(parents=True)
    keep.write_bytes(saved)

    for flag in ("--pipeline", "--pipelines"):
        result = smoke_copy.run(flag, "quantum", env="smoke")
        assert "Completed 2 out of 2 tasks" in result.stdout + result.stderr
        head = torch.load(data / OUTPUT_DIR / "quantum_head.pth", weights_only=True)
        assert head["enabled"] is True and head["quantum_config"]["n_qubits"] == 3
        metrics = _json(data / "08_reporting/quantum_metrics.json")
        for split in ("val", "test"):
            assert np.asarray(metrics[split]["confusion_matrix"]).shape == (NUM_GRADES, NUM_GRADES)
            assert {"accuracy", "quadratic_weighted_kappa"} <= set(metrics[split])
        (data / OUTPUT_DIR / "quantum_head.pth").unlink()
    leftover = sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file())
    assert "06_models/trained_model/phase1_classical_model.pth" not in leftover


def test_quantum_pipeline_with_quantum_disabled_fails_with_a_clear_message(smoke_copy):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_copy.path / 'mlflow.db'}")

    def recorded_runs():
        experiment = client.get_experiment_by_name("qsight")
        return client.search_runs([experiment.experiment_id]) if experiment else []

    before = {run.info.run_id for run in recorded_runs()}
    result = smoke_copy.run(
        "--pipelines", "quantum", env="smoke", params={"quantum.enabled": "false"}, check=False
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "quantum.enabled is false" in output
    assert "Run refused before it started" in output
    assert "Error: `kedro run --pipelines quantum` trains the quantum head" in output
    assert "Traceback (most recent call last)" not in output  # the message alone, no stack
    # The checks run before the MLflow run opens: a refused run leaves no run behind, and
    # certainly none RUNNING for ever.
    after = recorded_runs()
    assert {run.info.run_id for run in after} == before
    assert all(run.info.status != "RUNNING" for run in after)


def test_predict_names_the_setting_when_the_folder_is_missing_or_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="predict.input_dir"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match=r"holds no images.*\.txt"):
        list_images(tmp_path)
