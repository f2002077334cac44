"""Every input gets its own outputs, and any name the file system allows is handled: heatmaps of
``twin.jpeg`` and ``twin.png`` do not overwrite each other, and a file name that is not valid
UTF-8 is graded (predict, evaluate) or ingested, shown escaped in the CSV and JSON files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from qsight_pipeline.config import DatasetParams, EvaluateParams, IngestionParams, PredictParams
from qsight_pipeline.constants import SOVITRATH_CLASS_FOLDERS
from qsight_pipeline.data.sample import generate_sample
from qsight_pipeline.inference.loading import load_checkpoint_file
from qsight_pipeline.pipelines.predict.nodes import heatmap_name, predict_grades
from tests.conftest import REPO_ROOT
from tests.test_model_copies import save_tiny_model

BAD = b"bad\xff"  # not valid UTF-8: Python names such a file "bad\udcff"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("names"))


@pytest.fixture(scope="module")
def photographs(tiny_model) -> list[Path]:
    return sorted((tiny_model.parent / "sample").rglob("*.jpeg"))


def _non_utf8(folder: Path, stem: bytes, suffix: str) -> Path:
    """The path of a file ``<stem><suffix>`` in ``folder`` (skips where names must be UTF-8)."""
    path = Path(os.fsdecode(os.fsencode(folder) + b"/" + stem + suffix.encode()))
    try:
        path.touch()
    except OSError:  # pragma: no cover - e.g. a file system that only takes UTF-8 names
        pytest.skip("this file system refuses names that are not valid UTF-8")
    return path


def _catalog(entry: str, catalog_file: str, filepath: Path):
    """The project's catalog entry ``entry``, writing to ``filepath`` instead."""
    from kedro.io import AbstractDataset

    config = dict(yaml.safe_load((REPO_ROOT / "conf/base" / catalog_file).read_text())[entry])
    config.pop("metadata", None)
    config["path" if "path" in config else "filepath"] = str(filepath)
    return AbstractDataset.from_config(entry, config)


def _predict(tiny_model: Path, folder: Path, out: Path) -> pd.DataFrame:
    """``kedro run --pipelines predict`` with heatmaps, in process: its node, its catalog."""
    pytest.importorskip("pytorch_grad_cam", reason="needs the inference extra (grad-cam)")
    table, overlays = predict_grades(
        load_checkpoint_file(tiny_model / "complete_checkpoint.pth"),
        PredictParams.model_validate({"input_dir": str(folder), "heatmaps": True}),
    )
    _catalog("predictions", "catalog_predict.yml", out / "predictions.csv").save(table)
    _catalog("prediction_heatmaps", "catalog_predict.yml", out / "heatmaps").save(overlays)
    return pd.read_csv(out / "predictions.csv", keep_default_na=False)


def test_heatmap_names_are_plain_file_names_one_per_input():
    inputs = ["twin.jpeg", "twin.png", "eyes/twin.png", "eyes%2Ftwin.png", "eyes\\twin.png",
              os.fsdecode(BAD + b".png"), "deep/" * 60 + "twin.png", "deep/" * 61 + "twin.png"]
    names = [heatmap_name(relative) for relative in inputs]
    assert names[:3] == ["twin.jpeg", "twin.png", "eyes%2Ftwin.png"]
    assert names[5] == "bad%FF.png"
    assert len(set(names)) == len(inputs)
    for name in names:
        assert "/" not in name and "\\" not in name and len(name.encode()) <= 255
        name.encode("utf-8")  # no surrogates: any UTF-8 output (the index, the CSV) takes it
    assert names[-1].endswith("twin.png") and heatmap_name(inputs[-1]) == names[-1]  # stable


def test_two_photographs_with_one_stem_get_their_own_heatmaps(tiny_model, photographs, tmp_path):
    from qsight_pipeline.inference import load_model, predict_image
    from qsight_pipeline.inference.predict import overlay_image

    folder = tmp_path / "photographs"
    (folder / "eyes").mkdir(parents=True)
    shutil.copy(photographs[0], folder / "twin.jpeg")
    Image.open(photographs[1]).save(folder / "twin.png")
    Image.open(photographs[2]).save(folder / "eyes" / "twin.png")
    table = _predict(tiny_model, folder, tmp_path / "out")
    assert table["heatmap"].tolist() == [
        "heatmaps/eyes%2Ftwin.png.png", "heatmaps/twin.jpeg.png", "heatmaps/twin.png.png"]
    loaded = load_model(tiny_model)
    expected = {}
    for path in table["path"]:
        prediction = predict_image(loaded, path, heatmap=True)
        expected[path] = overlay_image(path, prediction.heatmap).astype(int)
    for _, row in table.iterrows():
        saved = np.asarray(Image.open(tmp_path / "out" / row["heatmap"])).astype(int)
        assert np.abs(saved - expected[row["path"]]).max() <= 2, row["path"]  # its own photograph
        for other, overlay in expected.items():
            if other != row["path"]:
                assert np.abs(saved - overlay).mean() > 5, (row["path"], other)


def test_predict_grades_a_file_whose_name_is_not_utf8(tiny_model, photographs, tmp_path):
    folder = tmp_path / "photographs"
    folder.mkdir()
    shutil.copy(photographs[0], _non_utf8(folder, BAD, ".jpeg"))
    _non_utf8(folder, b"broken\xfe", ".png").write_bytes(b"not an image")
    shutil.copy(photographs[1], folder / "good.jpeg")
    table = _predict(tiny_model, folder, tmp_path / "out").set_index("image")
    assert list(table.index) == ["bad\\xff", "broken\\xfe", "good"]
    graded = table.loc["bad\\xff"]
    assert graded["path"] == f"{folder}/bad\\xff.jpeg" and graded["error"] == ""
    assert graded["predicted_grade"] != "" and graded["heatmap"] == "heatmaps/bad%FF.jpeg.png"
    assert Image.open(tmp_path / "out" / graded["heatmap"]).size[0] >= 256
    broken = table.loc["broken\\xfe"]
    assert broken["predicted_grade"] == "" and f"{folder}/broken\\xfe.png" in broken["error"]
    assert table.loc["good", "predicted_grade"] != ""


def _sovitrath_with_bad_names(root: Path) -> tuple[Path, int]:
    """A generated sovitrath data set with one photograph renamed to a name that is not UTF-8
    and one undecodable file of such a name; returns the renamed path and its grade."""
    generate_sample(root, layout="sovitrath", patients=12, seed=1, size=32)
    first = sorted(root.rglob("*.png"))[0]
    renamed = _non_utf8(first.parent, BAD, ".png")
    first.replace(renamed)
    _non_utf8(first.parent, b"broken\xfe", ".png").write_bytes(b"not an image")
    return renamed, SOVITRATH_CLASS_FOLDERS.index(first.parent.name)


def test_evaluate_grades_a_file_whose_name_is_not_utf8(tiny_model, tmp_path):
    from qsight_pipeline.pipelines.evaluate.nodes import evaluate_external

    root, out = tmp_path / "external", tmp_path / "out"
    renamed, grade = _sovitrath_with_bad_names(root)
    result, table = evaluate_external(
        load_checkpoint_file(tiny_model / "complete_checkpoint.pth"),
        EvaluateParams.model_validate({"dataset": {"type": "sovitrath", "root": str(root)}}),
    )
    for entry, data in (("external_validation", result), ("external_predictions", table)):
        suffix = ".json" if entry == "external_validation" else ".csv"
        _catalog(entry, "catalog_predict.yml", out / f"{entry}{suffix}").save(data)
    saved = pd.read_csv(out / "external_predictions.csv", keep_default_na=False).set_index("image")
    row = saved.loc["bad\\xff"]
    assert row["path"] == f"{renamed.parent}/bad\\xff.png" and row["error"] == ""
    assert int(row["true_grade"]) == grade and row["predicted_grade"] != ""
    assert "broken\\xfe.png" in saved.loc["broken\\xfe", "error"]
    report = json.loads((out / "external_validation.json").read_text())
    assert report["dataset"]["images"] == len(saved) and report["dataset"]["unreadable"] == 1


def _ingest(root: Path, on_bad_image: str) -> tuple[pd.DataFrame, dict, list]:
    """The ingestion pipeline's nodes in order, as ``kedro run --pipelines ingestion`` runs them."""
    from qsight_pipeline.pipelines.ingestion import nodes

    dataset = DatasetParams.model_validate({"type": "sovitrath", "root": str(root)})
    ingestion = IngestionParams.model_validate({"on_bad_image": on_bad_image, "workers": 1})
    records, findings = nodes.scan_dataset(dataset, ingestion)
    split = nodes.split_by_patient(records, ingestion, 0)
    *caches, manifest, unreadable = nodes.build_image_caches_caches_first(split, 32, ingestion)
    report = nodes.summarise_ingestion(manifest, findings, unreadable, ingestion, 32, 0)
    return manifest, report, caches


def test_ingestion_keeps_a_photograph_whose_name_is_not_utf8(tmp_path):
    from qsight_pipeline.data.image_cache import UnreadableImagesError

    root = tmp_path / "data"
    renamed, grade = _sovitrath_with_bad_names(root)
    manifest, report, caches = _ingest(root, "skip")
    _catalog("manifest", "catalog_ingestion.yml", tmp_path / "manifest.csv").save(manifest)
    _catalog("ingestion_report", "catalog_ingestion.yml", tmp_path / "report.json").save(report)
    saved = pd.read_csv(tmp_path / "manifest.csv").set_index("image_id")
    assert saved.loc["bad\\xff", "path"] == f"{renamed.parent}/bad\\xff.png"
    assert saved.loc["bad\\xff", "grade"] == grade and len(saved) == sum(len(c) for c in caches)
    skipped = json.loads((tmp_path / "report.json").read_text())["skipped_images"]
    assert [item["path"] for item in skipped] == [f"{renamed.parent}/broken\\xfe.png"]

    with pytest.raises(UnreadableImagesError, match=r"broken\\xfe\.png"):
        _ingest(root, "fail")
