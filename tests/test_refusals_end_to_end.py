"""`kedro run` refuses, in one `Error:` line and before any node, what would otherwise end in a
traceback or write where it must not: an unknown pipeline, system folders and files as output
folders, a kernel folder as input, `${oc.env:...}` in conf/local, and inputs that overlap the
folders the run writes (issue 28, items 3 and 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.test_user_errors import assert_one_error_line

SYSTEM = (Path("/"), Path("/dev"), Path.home())
HEATMAPS = "07_model_output/heatmaps"
FOLDER_FIX = "Keep inputs and outputs apart: point"


def _qsight_files(folders=SYSTEM) -> set[Path]:
    return {path for folder in folders if folder.is_dir() for path in folder.glob(".qsight*")}


def _written(project) -> list[Path]:
    """Files under data/ that a node would have written (not the inputs, not the run's locks)."""
    return sorted(p for p in (project.path / "data").rglob("*") if p.is_file()
                  and "01_raw" not in p.parts and not p.name.startswith(".")
                  and HEATMAPS not in p.as_posix())


@pytest.mark.slow
def test_bad_names_and_folders_are_one_error_line_before_any_node(kedro_project, tmp_path):
    project = kedro_project
    photographs = {}
    heatmaps = project.data(HEATMAPS)
    heatmaps.mkdir(parents=True)
    for name in ("left.png", "right.png"):  # a user's photographs, in the folder of the heatmaps
        Image.new("RGB", (8, 8), (200, 30, 30)).save(heatmaps / name)
        photographs[heatmaps / name] = (heatmaps / name).read_bytes()
    (project.path / "photos").symlink_to(heatmaps, target_is_directory=True)
    a_file = tmp_path / "results.txt"
    a_file.write_text("mine")
    home = str(Path.home())
    system_before = _qsight_files()

    cases = [
        (["--pipelines", "nosuchpipe"], {},
         ["There is no pipeline named 'nosuchpipe'", "__default__, classical, ", "predict"]),
        (["--pipelines", "predict"], {"run.output_dir": str(a_file)},
         ["`run.output_dir` is", "results.txt', which is a file"]),
        (["--pipelines", "predict"], {"run.output_dir": "/dev"},
         ["`run.output_dir` is '/dev', which is the system folder /dev", "run.output_dir="]),
        (["--pipelines", "predict"], {"run.checkpoint_dir": "/"},
         ["`run.checkpoint_dir` is '/', which is the system folder /"]),
        (["--pipelines", "predict"], {"run.output_dir": home},
         [f"`run.output_dir` is '{home}', which is your home folder ({home}) itself"]),
        (["--pipelines", "predict"], {"predict.input_dir": "/proc"},
         ["`predict.input_dir` is '/proc', which is /proc, a folder of the operating system"]),
        # The example found: heatmap overlays written over the photographs they were made from.
        (["--pipelines", "predict"],
         {"predict.input_dir": f"data/{HEATMAPS}", "predict.heatmaps": "true"},
         [f"`predict.input_dir` is 'data/{HEATMAPS}' ({heatmaps}), where this run writes "
          "`prediction_heatmaps`", FOLDER_FIX + " predict.input_dir"]),
        # Through a link, the resolved folders are compared.
        (["--pipelines", "predict"], {"predict.input_dir": "photos"},
         [f"`predict.input_dir` is 'photos' ({heatmaps})", "`prediction_heatmaps`"]),
        (["--pipelines", "predict"], {"predict.input_dir": "data"},
         [f"which holds {project.data('')}", FOLDER_FIX]),
        (["--pipelines", "evaluate"], {"evaluate.dataset.root": "data/08_reporting/external"},
         [f"which lies inside {project.data('08_reporting')}, where this run writes `external_",
          FOLDER_FIX + " evaluate.dataset.root"]),
        ([], {"dataset.root": "data/06_models/trained_model/photos"},
         [f"which lies inside {project.data('06_models/trained_model')}",
          "where this run writes `run.output_dir`", "(or change `run.output_dir`)"]),
    ]
    for args, params, fragments in cases:
        result = project.run(*args, params=params or None, check=False, timeout=300)
        assert_one_error_line(result, *fragments)
    assert _written(project) == [], "no node may run"
    assert {path: path.read_bytes() for path in photographs} == photographs
    assert _qsight_files() == system_before, "nothing is written into a system folder"

    # OmegaConf refuses ${oc.env:...} outside credentials: the file and the way out, not a trace.
    local = project.path / "conf" / "local" / "parameters.yml"
    local.write_text("run:\n  output_dir: ${oc.env:HOME}/qsight\n")
    result = project.run("--pipelines", "predict", check=False, timeout=300)
    assert_one_error_line(
        result, "conf/local/parameters.yml: `run.output_dir` is '${oc.env:HOME}/qsight', which "
        "reads an environment variable", "only in credentials files",
        "`kedro run --params run.output_dir=$HOME/qsight`",
    )
    # A predict run reads predict.input_dir only: dataset.root inside the outputs is not its
    # concern, and the run goes on to its own refusal (no trained model here).
    local.unlink()
    result = project.run("--pipelines", "predict", params={"dataset.root": "data/05_model_input"},
                         check=False, timeout=300)
    assert_one_error_line(result, "complete_checkpoint.pth does not exist")
