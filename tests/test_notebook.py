"""The results notebook runs top to bottom (nbclient) on the shared smoke run's outputs and shows
that run's numbers and plots, so it cannot rot silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "qsight_results.ipynb"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def executed(smoke_project):
    """The notebook run in the shared smoke project (conftest), as a user would after kedro run."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    project = smoke_project.path
    output_dir = yaml.safe_load((project / "conf/base/globals.yml").read_text())["output_dir"]
    summary = json.loads((project / output_dir / "training_summary.json").read_text())
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=240, kernel_name="python3",
        # a working directory inside the project, as when the notebook is opened from notebooks/
        resources={"metadata": {"path": str(project / "data" / "08_reporting")}},
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
    # Kedro's session used the MLflow database at the project root, not one beside the kernel
    assert not (project / "data" / "08_reporting" / "mlflow.db").exists()
    assert "__default__" in "".join(o.get("text", "") for o in _outputs(notebook, "stream"))
