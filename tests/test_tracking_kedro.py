"""The tracking hooks inside a real ``kedro run`` with kedro-mlflow's own hook.

A throw-away Kedro project (in ``tmp_path``) registers QSight's hooks and a pipeline whose nodes
output the documented history/summary/report datasets from the synthetic summary, so this
checks the wiring (kedro-mlflow opens the run and logs parameters, our hook adds metrics and
artifacts to that same run, W&B writes an offline run) without training anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qsight_pipeline.reporting.tracking import evaluation_metrics
from tests.fixtures.wandb_offline import read_offline_run

REPO_ROOT = Path(__file__).resolve().parents[1]

NODES = '''
from tests.fixtures.synthetic_training_summary import build_model_info, build_training_summary
from qsight_pipeline.reporting import render_report_html, report_figures


def train_stage(name: str, seed: int):
    stage = next(s for s in build_training_summary(seed)["stages"] if s["name"] == name)
    return [stage]


def assemble(classical, quantum, ensemble, seed: int):
    return build_training_summary(seed), build_model_info()
'''

REGISTRY = '''
from kedro.pipeline import Pipeline, node
from qsight_pipeline.reporting import render_report_html, report_figures
from tinyqs.nodes import assemble, train_stage


def _stage(name):
    def run(seed):
        return train_stage(name, seed)
    run.__name__ = f"train_{name}"
    return node(run, "params:seed", f"{name}_history", name=f"train_{name}")


def register_pipelines():
    pipeline = Pipeline([
        _stage("classical"), _stage("quantum"), _stage("ensemble"),
        node(assemble, ["classical_history", "quantum_history", "ensemble_history", "params:seed"],
             ["training_summary", "model_info"], name="assemble"),
        node(report_figures, "training_summary", "report_figures", name="report_figures"),
        node(render_report_html, ["training_summary", "model_info", "report_figures"],
             "report_html", name="report_html"),
    ])
    return {"__default__": pipeline, "ensemble": pipeline}
'''

SETTINGS = '''
from qsight_pipeline.hooks import MlflowTrackingHook, WandbHook
HOOKS = (WandbHook(), MlflowTrackingHook())
'''

CATALOG = '''
"{stage}_history":
  type: json.JSONDataset
  filepath: data/08_reporting/{stage}_history.json
training_summary:
  type: json.JSONDataset
  filepath: data/06_models/training_summary.json
model_info:
  type: json.JSONDataset
  filepath: data/06_models/model_info.json
'''


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("kedro_mlflow")
    project = tmp_path_factory.mktemp("tinyqs")
    package = project / "src" / "tinyqs"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('__version__ = "0.0.1"\n')
    (package / "nodes.py").write_text(textwrap.dedent(NODES))
    (package / "pipeline_registry.py").write_text(textwrap.dedent(REGISTRY))
    (package / "settings.py").write_text(textwrap.dedent(SETTINGS))
    (project / "pyproject.toml").write_text(textwrap.dedent('''
        [tool.kedro]
        package_name = "tinyqs"
        project_name = "tinyqs"
        kedro_init_version = "1.7.0"
        source_dir = "src"
    '''))
    conf = project / "conf"
    (conf / "local").mkdir(parents=True)
    (conf / "base").mkdir()
    for name in ("mlflow.yml", "parameters_tracking.yml", "catalog_reporting.yml"):
        (conf / "base" / name).write_text((REPO_ROOT / "conf/base" / name).read_text())
    (conf / "base" / "catalog.yml").write_text(textwrap.dedent(CATALOG))
    (conf / "base" / "parameters.yml").write_text("seed: 7\n")

    env = {
        **os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
        "WANDB_MODE": "offline", "WANDB_SILENT": "true",
        "PYTHONPATH": os.pathsep.join([str(project / "src"), str(REPO_ROOT)]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--params",
         "tracking.wandb.enabled=true,tracking.wandb.run_name=tiny-kedro"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return project, result


def test_kedro_mlflow_run_has_parameters_metrics_and_artifacts(tiny_run):
    import mlflow

    project, _ = tiny_run
    assert (project / "mlflow.db").is_file()
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("qsight")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["seed"] == "7"  # logged by kedro-mlflow from params:seed

    summary = json.loads((project / "data/06_models/training_summary.json").read_text())
    for key, value in evaluation_metrics(summary).items():
        assert run.data.metrics[key] == pytest.approx(value, abs=1e-12), key
    history = client.get_metric_history(run.info.run_id, "classical/val/ensemble/kappa")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        [r["val"]["ensemble"]["kappa"] for r in summary["stages"][0]["history"]])

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"training_summary.json", "model_info.json", "report"} <= artifacts
    assert Path(experiment.artifact_location.removeprefix("file://")).is_relative_to(project)


def test_report_files_are_written_through_the_catalog(tiny_run):
    project, _ = tiny_run
    report = project / "data/08_reporting/report.html"
    assert report.is_file() and "How to read this report" in report.read_text(encoding="utf-8")
    figures = sorted(p.name for p in (project / "data/08_reporting/figures").glob("*.png"))
    assert "confusion_test_ensemble.png" in figures and "ensemble_weights.png" in figures


def test_wandb_offline_run_is_written_in_the_project(tiny_run):
    project, _ = tiny_run
    (run_dir,) = (project / "wandb").glob("offline-run-*")
    run = read_offline_run(run_dir)
    assert run.name == "tiny-kedro"
    assert "ensemble/val/quantum_head/accuracy" in run.history_keys()
    assert run.summary["stages/quantum/epochs_run"] == 2
    assert "qsight-training-report" in run.artifacts
