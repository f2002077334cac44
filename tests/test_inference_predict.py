"""``predict`` on a folder a user might really have, and the Python API agreeing with it."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from qsight_pipeline import load_model, predict_image, predict_images
from qsight_pipeline.constants import GRADE_NAMES, HEADS, NUM_GRADES

BAD_FILES = {
    "corrupt.jpeg": "truncated",
    "empty.png": "empty file (0 bytes)",
    "notes.txt": "cannot identify image file",
}


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, smoke_project) -> Path:
    """Generated photographs (two layouts, one in a sub-folder), a real 1411 px photograph from
    scikit-image, a truncated JPEG, a zero-byte file and a text file."""
    from skimage import data

    from qsight_pipeline.data.sample import generate_sample

    folder = tmp_path_factory.mktemp("mixed")
    sample = smoke_project.path / "data/01_raw/sample/resized_train/resized_train"
    for path in sorted(sample.glob("*.jpeg"))[:4]:
        shutil.copy(path, folder / path.name)
    pngs = tmp_path_factory.mktemp("sovitrath")
    generate_sample(pngs, layout="sovitrath", patients=2, size=48)
    (folder / "sovitrath").mkdir()
    for path in sorted(pngs.rglob("*.png"))[:2]:
        shutil.copy(path, folder / "sovitrath" / path.name)
    retina = data.retina()
    assert retina.shape == (1411, 1411, 3)
    Image.fromarray(retina).save(folder / "retina.jpeg", quality=90)
    (folder / "corrupt.jpeg").write_bytes((folder / "retina.jpeg").read_bytes()[:3000])
    # Readable but not gradable: the gate refers them for manual grading (test_inference_gate).
    first = np.asarray(Image.open(sorted(sample.glob("*.jpeg"))[0]).convert("RGB"))
    Image.fromarray(np.full_like(first, 128)).save(folder / "gate_blank.png")
    Image.fromarray((first * 0.2).astype(np.uint8)).save(folder / "gate_dark.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not a photograph\n")
    return folder


@pytest.fixture(scope="module")
def predicted(smoke_project, mixed_folder, tmp_path_factory):
    """One ``kedro run --pipelines predict`` with heatmaps, in a copy of the smoke project."""
    from tests.conftest import KedroProject

    target = tmp_path_factory.mktemp("predict") / "project"
    shutil.copytree(smoke_project.path, target, symlinks=True)
    project = KedroProject(target)
    project.run("--pipelines", "predict", env="smoke",
                params={"predict.input_dir": str(mixed_folder), "predict.heatmaps": "true"})
    return project, pd.read_csv(project.data("07_model_output/predictions.csv"), keep_default_na=False)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_every_file_gets_a_row_and_bad_ones_say_why(predicted, mixed_folder):
    project, table = predicted
    assert table["path"].tolist() == [str(p) for p in _files(mixed_folder)]
    for _, row in table.iterrows():
        name = Path(row["path"]).name
        if name in BAD_FILES:
            assert BAD_FILES[name] in row["error"], row["error"]
            assert row["predicted_grade"] == "" and row["refer"] == "" and row["heatmap"] == ""
            continue
        assert row["error"] == ""
        probs = np.array([float(row[f"prob_grade_{g}"]) for g in range(NUM_GRADES)])
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert int(row["predicted_grade"]) == int(probs.argmax())
        assert row["grade_name"] == GRADE_NAMES[int(probs.argmax())]
        assert float(row["referable_probability"]) == pytest.approx(probs[2:].sum(), abs=1e-5)
        for head in HEADS:
            head_probs = [float(row[f"prob_{head}_grade_{g}"]) for g in range(NUM_GRADES)]
            assert sum(head_probs) == pytest.approx(1.0, abs=1e-5)
        weights = [float(row[f"weight_{h}"]) for h in HEADS]
        assert sum(weights) == pytest.approx(1.0, abs=1e-5)
        assert row["refer"] in ("True", "False") and row["needs_review"] in ("True", "False")
        overlay = Image.open(project.data(f"07_model_output/{row['heatmap']}"))
        assert overlay.size[0] >= 256 and overlay.mode == "RGB"


def test_refer_and_review_follow_the_thresholds_saved_with_the_model(predicted):
    project, table = predicted
    for name in ("gate_blank", "gate_dark"):  # readable, not gradable: referred, with the reason
        row = table[table["image"] == name].iloc[0]
        assert row["decision"] == "refer for manual grading" and row["gradable"] == "False"
        assert row["refer"] == "True" and row["needs_review"] == "True" and row["gate_reasons"]
    loaded = load_model(project.data("06_models/trained_model"))
    good = table[table["error"] == ""]
    threshold = loaded.referral["threshold"]
    review = loaded.referral["review_entropy_threshold"]
    assert 0 < threshold < 1 and review is not None
    # A photograph the gate stops is referred and reviewed whatever its probabilities.
    gated = (good["decision"] == "refer for manual grading").tolist()
    assert gated == ((good["gradable"] == "False") | (good["in_distribution"] == "False")).tolist()
    above = (good["referable_probability"].astype(float) >= threshold).tolist()
    uncertain = (good["entropy"].astype(float) > review).tolist()
    assert (good["refer"] == "True").tolist() == [a or g for a, g in zip(above, gated, strict=True)]
    assert (good["needs_review"] == "True").tolist() == [u or g for u, g in zip(uncertain, gated, strict=True)]


def test_the_api_agrees_with_the_pipeline_on_every_field(predicted, mixed_folder):
    project, table = predicted
    loaded = load_model(project.data("06_models/trained_model"), device="cpu")
    results = predict_images(loaded, _files(mixed_folder), batch_size=3, heatmaps=True)
    from qsight_pipeline.pipelines.predict.nodes import prediction_row

    for result, (_, row) in zip(results, table.iterrows(), strict=True):
        expected = prediction_row(result, Path(result.source), Path(result.source).stem)
        for column, value in expected.items():
            if column == "latency_ms":
                continue
            written = row[column]
            if column in ("ood_distance", "gate_score") and value is not None:
                # A distance through the precision matrix magnifies float32 batch-size noise.
                assert float(written) == pytest.approx(value, rel=1e-4, abs=1e-4), column
            elif isinstance(value, float) and not math.isnan(value):
                assert float(written) == pytest.approx(value, abs=1e-5), column
            elif value is pd.NA or (isinstance(value, float) and math.isnan(value)) or value is None:
                assert written == "", column
            else:
                assert str(written) == str(value), column
        if result.error is None:
            assert result.heatmap.shape == (loaded.preprocessing["image_size"],) * 2
            assert 0 <= result.heatmap.min() and result.heatmap.max() <= 1


def test_predict_image_takes_an_array_and_reports_latency_per_component(predicted, mixed_folder):
    project, _ = predicted
    loaded = load_model(project.data("06_models/trained_model"))
    from skimage import data

    from_array = predict_image(loaded, data.retina())
    from_file = predict_image(loaded, mixed_folder / "retina.jpeg")
    assert from_array.error is None and from_array.grade_name in GRADE_NAMES
    # The JPEG round trip changes pixels a little, not the grading.
    np.testing.assert_allclose(from_array.ensemble_probabilities, from_file.ensemble_probabilities, atol=0.02)
    assert {"preprocess", "encoder", "compression", "head_a", "head_b", "ensemble", "calibration",
            "total"} <= set(from_array.latency_ms)
    assert from_array.latency_ms["total"] == pytest.approx(
        sum(v for k, v in from_array.latency_ms.items() if k != "total"))
    assert set(from_array.gate_weights) == set(HEADS)
    assert loaded.training_summary["calibration"]["referral"]["threshold"] == loaded.referral["threshold"]
    assert loaded.model_info["preprocessing"]["image_size"] == 32  # the smoke run's, whatever conf says
