"""One tiny real ``kedro run --env smoke`` (W&B on, offline), then what a user would look at:
the MLflow run, the offline W&B run, and the report in a browser, against training_summary.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qsight_pipeline.reporting import render_report_html, report_figures
from qsight_pipeline.reporting.tracking import epoch_metrics, evaluation_metrics
from tests.fixtures.wandb_offline import read_offline_run
from tests.test_report import CHROMIUM, CHROMIUM_FLAGS, expected_cells, parse

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_LAYERS = ("02_intermediate", "03_primary", "04_feature", "05_model_input", "06_models",
               "07_model_output", "08_reporting")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A project copy after ``kedro run --env smoke`` with W&B enabled in offline mode."""
    if not (REPO_ROOT / "conf" / "smoke").is_dir():
        pytest.skip("conf/smoke (the tiny end-to-end configuration) is not there yet")
    project = tmp_path_factory.mktemp("e2e") / "project"
    project.mkdir()
    shutil.copy2(REPO_ROOT / "pyproject.toml", project / "pyproject.toml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "local")
    shutil.copytree(REPO_ROOT / "conf", project / "conf", ignore=ignore)
    (project / "conf" / "local").mkdir()
    shutil.copytree(REPO_ROOT / "src", project / "src", ignore=ignore)
    (project / "data").mkdir()
    (project / "data" / "01_raw").symlink_to(REPO_ROOT / "data" / "01_raw", target_is_directory=True)
    for layer in DATA_LAYERS:
        (project / "data" / layer).mkdir()

    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
           "WANDB_MODE": "offline", "WANDB_SILENT": "true", "COLUMNS": "200"}
    env.pop("WANDB_DIR", None)
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--env", "smoke", "--params",
         "tracking.wandb.enabled=true,tracking.wandb.mode=offline,tracking.wandb.run_name=smoke"],
        cwd=project, env=env, capture_output=True, text=True, timeout=540,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    output_dir = yaml.safe_load((project / "conf/base/globals.yml").read_text())["output_dir"]
    summary = json.loads((project / output_dir / "training_summary.json").read_text())
    return project, summary


def test_mlflow_run_metrics_equal_training_summary(smoke_run):
    import mlflow

    project, summary = smoke_run
    uri = f"sqlite:///{project / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        runs = mlflow.search_runs(experiment_names=["qsight"], output_format="list")
    finally:
        mlflow.set_tracking_uri(previous)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["image_size"] == "32"  # parameters, logged by kedro-mlflow

    for key, value in evaluation_metrics(summary).items():
        assert run.data.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    client = mlflow.MlflowClient(uri)
    for stage in summary["stages"]:
        history = client.get_metric_history(run.info.run_id, f"{stage['name']}/val/ensemble/kappa")
        assert sorted((m.step, m.value) for m in history) == [
            (r["epoch"], pytest.approx(r["val"]["ensemble"]["kappa"])) for r in stage["history"]]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"training_summary.json", "model_info.json", "report"} <= artifacts
    report = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert "report/report.html" in report
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "report/figures")}
    assert "report/figures/confusion_test_ensemble.png" in plots
    assert len(plots) == len(list((project / "data/08_reporting/figures").glob("*.png")))


def test_wandb_offline_run_has_the_run_keys(smoke_run):
    project, summary = smoke_run
    (run_dir,) = (project / "wandb").glob("offline-run-*")
    run = read_offline_run(run_dir)
    assert run.name == "smoke"
    logged = run.history_keys()
    for stage in summary["stages"]:
        for key in epoch_metrics({"stage": stage["name"], **stage["history"][-1]}):
            assert key in logged, key
        assert run.summary[f"stages/{stage['name']}/epochs_run"] == stage["epochs_run"]
    for model in summary["evaluation"]["val"]:
        assert f"val_confusion_matrix/{model}_table/_type" in logged
    for component in summary["latency_samples_ms"]:
        assert f"latency_ms/{component}/_type" in logged
    assert sorted(run.artifacts["qsight-training-report"]) == [
        "model_info.json", "report.html", "training_summary.json"]
    assert "report/confusion_val_ensemble/_type" in logged


def _dump_dom(page: Path, tmp_path: Path) -> str:
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", page.as_uri()], check=True, capture_output=True,
        text=True, timeout=90, env={**os.environ, "HOME": str(tmp_path)},
    ).stdout


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_report_of_a_real_run_shows_its_numbers(smoke_run, tmp_path):
    """The reporting functions on a real summary, rendered by Chromium."""
    _, summary = smoke_run
    page = tmp_path / "report.html"
    page.write_text(render_report_html(summary, {}, report_figures(summary)), encoding="utf-8")
    rendered = parse(_dump_dom(page, tmp_path))
    for element_id, text in expected_cells(summary).items():
        assert rendered.texts.get(element_id, "<missing>").strip() == text, element_id


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_pipeline_writes_the_report_through_the_catalog(smoke_run, tmp_path):
    project, summary = smoke_run
    page = project / "data" / "08_reporting" / "report.html"
    figures = sorted(p.name for p in (project / "data/08_reporting/figures").glob("*.png"))
    assert "confusion_test_ensemble.png" in figures
    html = page.read_text(encoding="utf-8")
    assert len(re.findall(r'src="data:image/png;base64,', html)) == len(figures)
    rendered = parse(_dump_dom(page, tmp_path))
    for element_id, text in expected_cells(summary).items():
        assert rendered.texts.get(element_id, "<missing>").strip() == text, element_id
