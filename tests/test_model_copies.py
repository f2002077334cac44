"""The readable copies beside a checkpoint (``model_info.json``, ``training_summary.json``,
``calibration.json``) are refused when they differ from what the checkpoint holds, by
``load_model`` and by every pipeline that loads ``complete_checkpoint`` alike (README, Safety)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.inference.loading import load_model
from tests.conftest import REPO_ROOT, create_project_copy


def save_tiny_model(folder: Path) -> Path:
    """A tiny CNN trained for one epoch on a generated sample (32 px), saved with ``save_model``
    and given the ``calibration.json`` the ensemble pipeline writes beside it: a few seconds."""
    from qsight_pipeline import (
        DatasetConfig,
        TrainingConfig,
        create_dataloaders,
        save_model,
        train_hybrid_model,
    )
    from qsight_pipeline.data.sample import generate_sample

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine, one thread is faster
    try:
        generate_sample(folder / "sample", patients=10, seed=0, size=32)
        train, val, classes = create_dataloaders(DatasetConfig(
            root=folder / "sample", batch_size=8, image_size=32, val_fraction=0.25,
            test_fraction=0.2,
        ))
        model, summary = train_hybrid_model(
            train, val, classes, config=TrainingConfig(
                stages=[{"name": "classical", "num_epochs": 1, "learning_rate": 2e-3}],
                latency_tracking=False,
                model={"encoder_name": "test_resnet", "pretrained": False, "compressed_dim": 4},
            ),
            encoder_type="resnet", quantum_enabled=False,
        )
    finally:
        torch.set_num_threads(threads)
    model_dir = save_model(model, summary, folder / "model")
    # As the ensemble pipeline writes it: the operating point and the figures of its report.
    applied = json.loads((model_dir / "model_info.json").read_text())["calibration"]
    report = {k: v for k, v in summary["calibration"].items() if k not in applied}
    assert report["quality"]
    (model_dir / "calibration.json").write_text(json.dumps({**applied, "report": report}, indent=2))
    return model_dir


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("copies"))


@pytest.fixture
def model_dir(tiny_model, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model, tmp_path / "trained_model"))


def _edit(path: Path, change) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content, indent=2))


def _halve_temperatures(content: dict) -> None:
    temperatures = (content.get("calibration") or content)["temperatures"]
    for head in temperatures:
        temperatures[head] /= 2


def _catalog_checkpoint(model_dir: Path):
    """``complete_checkpoint`` as the project's catalog defines it (predict, evaluate, export)."""
    from kedro.io import AbstractDataset

    entries = yaml.safe_load((REPO_ROOT / "conf/base/catalog_training.yml").read_text())
    config = dict(entries["complete_checkpoint"])
    config["filepath"] = str(model_dir / "complete_checkpoint.pth")
    config.pop("metadata", None)
    return AbstractDataset.from_config("complete_checkpoint", config)


def _drop_report_figures(calibration: dict) -> None:
    calibration["report"].pop("quality")


EDITS = {  # file -> an edit a user might make, and the key the message names first
    "model_info.json": (_halve_temperatures, "calibration.temperatures"),
    "calibration.json": (_halve_temperatures, "temperatures"),
    "calibration.json report": (_drop_report_figures, "report.quality"),
    "training_summary.json": (lambda summary: summary.update(best_epoch=99), "best_epoch"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_an_edited_copy_is_refused_by_load_model_and_the_catalog_naming_it(model_dir, case):
    honest = load_model(model_dir)
    assert _catalog_checkpoint(model_dir).load()["model_info"] == honest.model_info
    name = case.split()[0]
    change, first_key = EDITS[case]
    _edit(model_dir / name, change)
    expected = f"{model_dir / name} does not belong to {model_dir / 'complete_checkpoint.pth'}"
    with pytest.raises(ArtifactError) as from_api:
        load_model(model_dir)
    with pytest.raises(ArtifactError) as from_catalog:
        _catalog_checkpoint(model_dir).load()
    for error in (from_api, from_catalog):
        message = str(error.value)
        assert expected in message and f"`{first_key}" in message and "\n" not in message
    (model_dir / name).unlink()  # without the copy, the checkpoint's own values grade
    assert load_model(model_dir).temperatures == honest.temperatures


@pytest.mark.slow
def test_kedro_run_predict_refuses_an_edited_model_info_in_one_line(tiny_model, tmp_path):
    project = create_project_copy(tmp_path / "project")
    model_dir = project.data("06_models/trained_model")
    shutil.copytree(tiny_model, model_dir)
    photographs = tmp_path / "photographs"
    photographs.mkdir()
    shutil.copy(next((tiny_model.parent / "sample").rglob("*.jpeg")), photographs / "eye.jpeg")
    _edit(model_dir / "model_info.json", _halve_temperatures)
    result = project.run("--pipelines", "predict", params={"predict.input_dir": str(photographs)},
                         check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output[-3000:]
    assert f"{model_dir / 'model_info.json'} does not belong" in errors[0]
    assert "Traceback" not in output
    assert not project.data("07_model_output/predictions.csv").exists()
