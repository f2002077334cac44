"""The folders a run reads and writes, the pipeline names and `${oc.env:...}`, checked before the
first node with one message each (issue 28, items 3 and 6). `kedro run` itself:
tests/test_refusals_end_to_end.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kedro.io import DataCatalog
from kedro.pipeline import Node, Pipeline

from qsight_pipeline.config import validate_parameters
from qsight_pipeline.errors import ParameterError, UserError
from qsight_pipeline.kedro_app.preflight import PreflightError
from qsight_pipeline.kedro_app.run_folders import (
    check_output_folders,
    check_run_folders,
    system_folder,
)


def _typed(**blocks):
    return validate_parameters(blocks)


@pytest.mark.parametrize(
    ("folder", "relation"),
    [
        ("/", "is the system folder /"),
        ("/dev", "is the system folder /dev"),
        ("/proc/self", "lies inside the system folder /proc"),
        ("/sys", "is the system folder /sys"),
        ("/etc", "is the system folder /etc"),
        ("/usr", "is the system folder /usr"),
        ("/usr/lib/qsight", "lies inside the system folder /usr"),
        ("/home", "is the system folder /home"),
        (str(Path.home()), f"is your home folder ({Path.home()}) itself"),
    ],
)
def test_system_folders_are_never_output_folders(folder, relation, tmp_path):
    assert system_folder(Path(folder)) == relation
    for setting in ("output_dir", "checkpoint_dir"):
        with pytest.raises(PreflightError) as info:
            check_output_folders(_typed(run={setting: folder}), tmp_path)
        message = str(info.value)
        assert f"`run.{setting}`" in message and repr(folder) in message
        assert f"run.{setting}=outputs/my_run" in message  # the way out
        assert "\n" not in message and isinstance(info.value, UserError)


def test_a_users_folders_are_accepted_a_link_into_the_system_is_not(tmp_path):
    inside_home = Path.home() / "qsight-results"  # a folder inside the home folder is the user's
    assert system_folder(inside_home) is None and system_folder(tmp_path) is None
    # A project under a system tree (a container's /usr/src/app) keeps its own output folders.
    check_output_folders(_typed(run={"output_dir": "data/06_models/x"}), Path("/usr/src/app"))
    (tmp_path / "etc_link").symlink_to("/etc")
    with pytest.raises(PreflightError, match=r"`run\.output_dir`") as info:
        check_output_folders(_typed(run={"output_dir": str(tmp_path / "etc_link")}), tmp_path)
    assert "/etc" in str(info.value)


def test_an_output_folder_that_is_a_file_is_refused_whichever_pipeline_runs(tmp_path):
    (tmp_path / "results.txt").write_text("mine")
    with pytest.raises(PreflightError, match=r"`run\.output_dir`.*results\.txt"):
        check_output_folders(_typed(run={"output_dir": "results.txt"}), tmp_path)
    with pytest.raises(PreflightError, match=r"`run\.checkpoint_dir`.*results\.txt"):
        check_output_folders(_typed(run={"checkpoint_dir": "results.txt/ckpt"}), tmp_path)
    assert (tmp_path / "results.txt").read_text() == "mine"


def _predict_pipeline() -> Pipeline:
    """The predict pipeline's shape: it reads `params:predict` and writes two catalog entries."""
    return Pipeline([Node(lambda *a: (None, None), ["complete_checkpoint", "params:predict"],
                          ["predictions", "prediction_heatmaps"], name="predict_grades")])


CATALOG = {
    "predictions": {"type": "pandas.CSVDataset",
                    "filepath": "data/07_model_output/predictions.csv"},
    "prediction_heatmaps": {"type": "qsight_pipeline.kedro_app.datasets.FileSetDataset",
                            "path": "data/07_model_output/heatmaps"},
}


def _check_predict(project: Path, input_dir: str, **run) -> None:
    typed = _typed(predict={"input_dir": input_dir}, run=run)
    check_run_folders(typed, _predict_pipeline(), DataCatalog.from_config(CATALOG), project)


def test_an_input_folder_that_overlaps_an_output_folder_is_refused_naming_both(tmp_path):
    heatmaps = tmp_path / "data/07_model_output/heatmaps"
    heatmaps.mkdir(parents=True)
    with pytest.raises(PreflightError) as info:
        _check_predict(tmp_path, "data/07_model_output/heatmaps/left")
    # Pinned in full: the refusal that keeps a run from writing over the photographs it reads.
    assert (f"`predict.input_dir` is 'data/07_model_output/heatmaps/left' ({heatmaps}/left), "
            f"which lies inside {heatmaps}, where this run writes `prediction_heatmaps`"
            in str(info.value))
    with pytest.raises(PreflightError, match=re.escape(f"{tmp_path}/data/06_models/trained_model")):
        _check_predict(tmp_path, str(tmp_path))
    with pytest.raises(PreflightError, match=r"`predict\.input_dir`.*`run\.output_dir`"):
        _check_predict(tmp_path, str(tmp_path / "photos"), output_dir=str(tmp_path / "photos"))
    # A folder beside the outputs is fine, also when its name starts like one of them.
    (tmp_path / "data/07_model_output_photos").mkdir()
    _check_predict(tmp_path, "data/07_model_output_photos")


def test_only_the_folders_the_running_pipelines_read_are_checked(tmp_path):
    typed = _typed(dataset={"root": "data/07_model_output/heatmaps"},
                   evaluate={"dataset": {"type": "sovitrath", "root": "/proc"}})
    # predict reads neither dataset.root nor evaluate.dataset.root
    check_run_folders(typed, _predict_pipeline(), DataCatalog.from_config(CATALOG), tmp_path)
    evaluate = Pipeline([Node(lambda *a: None, ["params:evaluate"], "external_validation")])
    with pytest.raises(PreflightError, match=r"`evaluate\.dataset\.root`.*'/proc'"):
        check_run_folders(typed, evaluate, DataCatalog.from_config(CATALOG), tmp_path)


def test_an_unknown_pipeline_is_a_user_error_listing_the_known_ones():
    from qsight_pipeline.pipeline_registry import UnknownPipelineError, _Pipelines, pipeline_names

    names = pipeline_names()
    assert names[0] == "__default__" and {"ingestion", "predict", "evaluate"} <= set(names)
    with pytest.raises(KeyError) as info:  # Kedro's session catches a KeyError of the registry
        _Pipelines({})["nosuchpipe"]
    assert isinstance(info.value, UnknownPipelineError) and isinstance(info.value, UserError)
    # Pinned: the first words a user sees after a mistyped --pipelines.
    assert str(info.value).startswith("There is no pipeline named 'nosuchpipe'. The project's "
                                      "pipelines are: __default__, classical,")


def test_an_environment_variable_outside_credentials_names_the_file_and_the_way_out(tmp_path):
    from qsight_pipeline.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    for env in ("base", "local"):
        (tmp_path / env).mkdir()
    (tmp_path / "base" / "parameters.yml").write_text("run:\n  seed: 1\n")
    (tmp_path / "local" / "parameters.yml").write_text(
        "predict:\n  input_dir: ${oc.env:PHOTOS,/data}/new\n")
    loader = CONFIG_LOADER_CLASS(str(tmp_path), **CONFIG_LOADER_ARGS)
    with pytest.raises(ParameterError) as info:
        loader["parameters"]
    message = str(info.value)
    assert f"{tmp_path}/local/parameters.yml" in message and "`predict.input_dir`" in message
    assert "predict.input_dir=$PHOTOS/new" in message  # the way out


def test_an_output_dir_the_catalog_does_not_follow_is_refused(tmp_path):
    """`run.output_dir` written in a parameters file moves the parameter but not the catalog's
    files (they follow globals.yml or --params): refused, saying where to set it."""
    catalog = DataCatalog.from_config({**CATALOG, "model_info": {
        "type": "json.JSONDataset", "filepath": "data/06_models/trained_model/model_info.json"}})
    with pytest.raises(PreflightError) as info:
        check_run_folders(_typed(run={"output_dir": "data/mine"}), _predict_pipeline(), catalog,
                          tmp_path)
    assert all(named in str(info.value) for named in ("`run.output_dir`", "'data/mine'",
                                                      "data/06_models/trained_model"))
    assert "conf/local/globals.yml" in str(info.value)
    check_run_folders(_typed(run={"output_dir": str(tmp_path / "data/06_models/trained_model")}),
                      _predict_pipeline(), catalog, tmp_path)  # the same folder: accepted
