"""After the shared tiny ``kedro run --env smoke`` (W&B on, offline, through
conf/smoke/parameters_tracking.yml), what a user would look at: the MLflow run, the offline W&B
run and the report in a browser, each against training_summary.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from qsight_pipeline.reporting import render_report_html, report_figures
from qsight_pipeline.reporting.tracking import epoch_metrics, evaluation_metrics
from tests.fixtures.wandb_offline import read_offline_run
from tests.test_report import assert_screenshot, assert_shows_the_summary, rendered

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(smoke_project):
    """The shared ``kedro run --env smoke`` (conftest) and its training_summary.json."""
    output_dir = yaml.safe_load((smoke_project.path / "conf/base/globals.yml").read_text())["output_dir"]
    summary = json.loads((smoke_project.path / output_dir / "training_summary.json").read_text())
    return smoke_project.path, summary


def test_mlflow_run_metrics_equal_training_summary(smoke_run):
    import mlflow

    project, summary = smoke_run
    uri = f"sqlite:///{project / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        # the newest run wrote the current training_summary.json
        runs = mlflow.search_runs(experiment_names=["qsight"], output_format="list",
                                  order_by=["attributes.start_time DESC"])
    finally:
        mlflow.set_tracking_uri(previous)
    assert runs, "the MLflow hook recorded no run"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["run.image_size"] == "32"  # parameters, logged when the run opened

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
    run_dirs = sorted((project / "wandb").glob("offline-run-*"))  # names start with the time
    assert run_dirs, "no offline W&B run: is tracking.wandb enabled in conf/smoke?"
    run = read_offline_run(run_dirs[-1])
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


def test_report_of_a_real_run_shows_its_numbers(smoke_run, page, tmp_path):
    """The reporting functions on a real summary, rendered by Chromium."""
    _, summary = smoke_run
    report = tmp_path / "report.html"
    figures = report_figures(summary)
    report.write_text(render_report_html(summary, {}, figures), encoding="utf-8")
    assert_shows_the_summary(rendered(page, report.as_uri()), summary, len(figures))


def test_pipeline_writes_the_report_through_the_catalog(smoke_run, page):
    project, summary = smoke_run
    report = project / "data" / "08_reporting" / "report.html"
    figures = sorted(p.name for p in (project / "data/08_reporting/figures").glob("*.png"))
    assert "confusion_test_ensemble.png" in figures
    html = report.read_text(encoding="utf-8")
    assert len(re.findall(r'src="data:image/png;base64,', html)) == len(figures)
    assert_shows_the_summary(rendered(page, report.as_uri()), summary, len(figures))
    assert_screenshot(page)
