"""The results notebook runs top to bottom (nbclient) and shows the run's numbers and plots.

It runs in a throw-away copy of the project whose catalog points at a training summary, model
info and report written where a ``kedro run`` writes them, so it cannot rot silently.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from qsight_pipeline.reporting import render_report_html, report_figures
from tests.fixtures.synthetic_training_summary import build_model_info, build_training_summary

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "qsight_results.ipynb"

pytestmark = pytest.mark.slow


def _project_with_run_outputs(destination: Path, summary: dict) -> Path:
    destination.mkdir()
    shutil.copy2(REPO_ROOT / "pyproject.toml", destination / "pyproject.toml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "local")
    shutil.copytree(REPO_ROOT / "conf", destination / "conf", ignore=ignore)
    (destination / "conf" / "local").mkdir()
    # a copy, not a link: Kedro refuses a source folder that resolves outside the project
    shutil.copytree(REPO_ROOT / "src", destination / "src", ignore=ignore)
    (destination / "notebooks").mkdir()
    shutil.copy2(NOTEBOOK, destination / "notebooks" / NOTEBOOK.name)

    output_dir = yaml.safe_load((REPO_ROOT / "conf/base/globals.yml").read_text())["output_dir"]
    models = destination / output_dir
    models.mkdir(parents=True)
    (models / "training_summary.json").write_text(json.dumps(summary))
    (models / "model_info.json").write_text(json.dumps(build_model_info()))
    reporting = destination / "data" / "08_reporting"
    reporting.mkdir(parents=True)
    html = render_report_html(summary, build_model_info(), report_figures(summary))
    (reporting / "report.html").write_text(html, encoding="utf-8")
    return destination


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    summary = build_training_summary()
    project = _project_with_run_outputs(tmp_path_factory.mktemp("nb") / "project", summary)
    notebook = nbformat.read(project / "notebooks" / NOTEBOOK.name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=240, kernel_name="python3",
        resources={"metadata": {"path": str(project / "notebooks")}},
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    return notebook, summary, project


def _outputs(notebook, kind: str) -> list:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
            if kind in o.get("data", {}) or o.get("output_type") == kind]


def test_notebook_reads_the_run_through_the_catalog(executed):
    notebook, summary, _ = executed
    printed = "".join(o.get("text", "") for o in _outputs(notebook, "stream"))
    best = summary["best_validation"]
    assert (f"Best validation: stage {best['stage']}, epoch {best['epoch']}, ensemble kappa "
            f"{best['metrics']['ensemble']['kappa']:.4f}") in printed
    assert "characters of HTML" in printed


def test_notebook_shows_the_test_metrics_and_plots(executed):
    notebook, summary, project = executed
    tables = " ".join(o["data"]["text/plain"] for o in _outputs(notebook, "text/plain"))
    test_ensemble = summary["evaluation"]["test"]["ensemble"]
    assert f"{round(test_ensemble['accuracy'], 4)}" in tables
    assert len(_outputs(notebook, "image/png")) >= 3  # curves, confusion matrix, weights
    # Kedro's session opened kedro-mlflow's database at the project root, not beside the notebook
    assert not (project / "notebooks" / "mlflow.db").exists()
