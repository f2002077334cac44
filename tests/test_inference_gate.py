"""The gate in front of the grader: gradability and out-of-distribution checks, saved with the model."""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from qsight_pipeline import load_model, predict_image, predict_images
from qsight_pipeline.config import GateParams, PredictParams
from qsight_pipeline.data.image_cache import load_image
from qsight_pipeline.inference import gate as gating
from qsight_pipeline.inference.gate_eval import CORRUPTIONS, non_fundus_pictures
from qsight_pipeline.inference.loading import load_checkpoint_file, loaded_from_checkpoint

SAMPLE = Path(__file__).resolve().parents[1] / "data/01_raw/sample/resized_train/resized_train"
SIZE = 32


@pytest.fixture(scope="module")
def fitted():
    """Bounds fitted on 120 bundled sample photographs at 32 px; 40 others held out."""
    files = sorted(SAMPLE.glob("*.jpeg"))
    train = [gating.quality_measures(load_image(f, SIZE), gating.original_size(f)) for f in files[:120]]
    held_out = [(load_image(f, SIZE), gating.original_size(f)) for f in files[120:160]]
    return gating.fit_gradability(train), held_out


def _reasons(image, gradability, size=(256, 256)) -> list[str]:
    return gating.check_gradability(gating.quality_measures(image, size), gradability)[0]


def test_bounds_come_from_the_training_distribution(fitted):
    gradability, _ = fitted
    bounds = gradability["bounds"]
    low, high = bounds["field_fraction"]["train_quantiles"]
    assert bounds["field_fraction"]["min"] < low <= high < bounds["field_fraction"]["max"]
    assert bounds["resolution"]["max"] is None and bounds["resolution"]["min"] < 256
    assert bounds["field_roundness"]["max"] is None
    assert gradability["quantile"] == 0.01 and gradability["images"] == 120


def test_clean_held_out_photographs_pass(fitted):
    gradability, held_out = fitted
    failing = [_reasons(image, gradability, size) for image, size in held_out]
    assert sum(1 for reasons in failing if reasons) <= 2, failing


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("blank", "no fundus field found"),
        ("blurred", "out of focus"),
        ("dark", "underexposed"),
        ("bright", "overexposed"),
        ("field_cropped_out", "no dark surround"),
        ("checkerboard", "not a round fundus field"),
        ("text", "no dark surround"),
        ("noise", "noisy or not a fundus photograph"),
        ("small", "resolution too low"),
    ],
)
def test_bad_pictures_are_flagged_with_the_right_reason(fitted, kind, expected):
    gradability, held_out = fitted
    image, size = held_out[0]
    rng = np.random.default_rng(0)
    pictures = {
        "blank": np.zeros_like(image),
        "blurred": ndimage.gaussian_filter(image.astype(np.float32), (1.5, 1.5, 0)).astype(np.uint8),
        "dark": CORRUPTIONS["underexposed"](image, rng),
        "bright": CORRUPTIONS["overexposed"](image, rng),
        "field_cropped_out": CORRUPTIONS["field_cropped_out"](image, rng),
        "checkerboard": non_fundus_pictures(1, SIZE)["checkerboard"][0],
        "text": non_fundus_pictures(1, SIZE)["text"][0],
        "noise": CORRUPTIONS["random_noise"](image, rng),
        "small": image,
    }
    reasons = _reasons(pictures[kind], gradability, (64, 48) if kind == "small" else size)
    assert any(expected in reason for reason in reasons), reasons


def test_ood_threshold_lets_the_set_share_of_validation_pass():
    rng = np.random.default_rng(0)
    train, val = rng.normal(size=(300, 8)), rng.normal(size=(100, 8))
    ood = gating.fit_ood(train, val, pass_rate=0.95)
    assert ood["validation_pass_rate"] >= 0.95
    assert np.asarray(ood["precision"]).shape == (8, 8)  # plain lists, no pickled estimator
    far = gating.mahalanobis(np.full((1, 8), 6.0), ood)[0]
    assert far > ood["threshold"]
    overridden = gating.effective_gates(
        {"gradability": {"bounds": {}}, "ood": ood}, {"ood_threshold": 1e9, "focus_min": 1.0}
    )
    assert overridden["ood"]["threshold"] == 1e9 and overridden["gradability"]["bounds"]["focus"]["min"] == 1.0
    assert ood["threshold"] != 1e9  # the saved gate is left alone


@pytest.mark.parametrize("count, rank", [(46, 45), (39, 38), (19, 19), (5, 5), (100, 96)])
def test_the_marginal_threshold_is_the_split_conformal_rank(count, rank):
    # ceil((n + 1) * 0.95)-th smallest validation distance, the largest when that passes n
    scores = np.random.default_rng(count).permutation(np.arange(1.0, count + 1))
    threshold, found, guaranteed = gating.conformal_threshold(scores, 0.95)
    assert threshold == rank == found and guaranteed == ((count + 1) * 0.95 <= count)


@pytest.mark.parametrize("count, rank, guaranteed", [(46, 46, True), (30, 30, False), (1000, 960, True)])
def test_the_confident_threshold_needs_a_higher_rank_on_small_splits(count, rank, guaranteed):
    # P(share passing < 95%) <= 10%: 0.95 ** 46 = 0.094 allows the largest of 46, not of 30
    scores = np.arange(1.0, count + 1)
    assert gating.conformal_threshold(scores, 0.95, 0.9) == (float(rank), rank, guaranteed)


def test_new_in_distribution_photographs_pass_at_the_set_rate():
    # Exchangeable draws, many small validation splits of 46: fresh points pass >= 95% on average
    # with the marginal rank and in >= 90% of the splits with the confident one, where the plain
    # 95% quantile of 46 values lets fewer through.
    rng = np.random.default_rng(1)
    fresh = rng.standard_normal((4000, 46 + 200))
    def shares(threshold):
        return np.array([np.mean(row[46:] <= threshold(row[:46])) for row in fresh])
    marginal = shares(lambda v: gating.conformal_threshold(v, 0.95)[0])
    confident = shares(lambda v: gating.conformal_threshold(v, 0.95, 0.9)[0])
    plain = shares(lambda v: np.quantile(v, 0.95, method="higher"))
    assert np.mean(marginal) >= 0.95 > np.mean(plain)
    assert np.mean(confident >= 0.95) >= 0.88 > np.mean(marginal >= 0.95)

# --- with the smoke run's model ---------------------------------------------------------------


def _model_dir(smoke_project) -> Path:
    return smoke_project.data("06_models/trained_model")


def test_the_gate_is_fitted_at_training_and_reloaded_with_the_model(smoke_project):
    loaded = load_model(_model_dir(smoke_project))
    saved = loaded.model_info["gates"]
    assert saved["format"] == gating.GATES_FORMAT
    assert loaded.gates["gradability"]["bounds"] == saved["gradability"]["bounds"]
    assert loaded.gates["ood"]["threshold"] == saved["ood"]["threshold"]
    assert "training-split pictures" in saved["gradability"]["fitted_on"]
    gate = loaded.training_summary["gate"]
    assert gate["gradability"]["bounds"]["focus"]["min"] == saved["gradability"]["bounds"]["focus"]["min"]
    evaluation = gate["evaluation"]
    assert evaluation["clean"]["pass_rate"] >= 0.9
    assert evaluation["corrupted"]["auroc"] >= 0.9
    assert evaluation["non_fundus"]["auroc"] >= 0.95
    assert "manual grading" in gate["rule"]
    from qsight_pipeline.reporting.tracking import summary_metrics  # what W&B and MLflow log

    assert summary_metrics(loaded.training_summary)["gate/corrupted/auroc"] == evaluation["corrupted"]["auroc"]
    # The report explains the rule and shows the figures.
    report = smoke_project.data("08_reporting/report.html").read_text(encoding="utf-8")
    assert "referred for manual grading" in report and "Gate" in report


def test_the_api_refers_bad_photographs_and_grades_clean_ones(smoke_project):
    loaded = load_model(_model_dir(smoke_project))
    manifest = pd.read_csv(smoke_project.data("03_primary/manifest.csv"), dtype=str, keep_default_na=False)
    test_files = [smoke_project.path / p for p in manifest.loc[manifest["split"] == "test", "path"]]
    clean = predict_images(loaded, test_files)
    assert sum(bool(p.gradable) for p in clean) >= 0.9 * len(clean)
    for p in clean:
        if p.gradable and p.in_distribution:
            assert p.decision in ("refer", "no referral") and p.grade is not None
    photograph = np.asarray(Image.open(test_files[0]).convert("RGB"))
    bad = {
        "blank": np.zeros_like(photograph),
        "dark": (photograph * 0.2).astype(np.uint8),
        "blurred": ndimage.gaussian_filter(photograph.astype(np.float32), (12, 12, 0)).astype(np.uint8),
    }
    for name, picture in bad.items():
        result = predict_image(loaded, picture)
        assert result.gradable is False, name
        assert result.decision == "refer for manual grading" and result.refer and result.needs_review
        assert result.gradability_reasons, name


def test_predict_overrides_replace_saved_bounds(smoke_project, tmp_path):
    checkpoint = load_checkpoint_file(_model_dir(smoke_project) / "complete_checkpoint.pth")
    dark = (np.asarray(Image.open(next(SAMPLE.glob("*.jpeg"))).convert("RGB")) * 0.2).astype(np.uint8)
    strict = loaded_from_checkpoint(checkpoint)
    assert predict_image(strict, dark).gradable is False
    lenient = loaded_from_checkpoint(checkpoint, gate_overrides={
        "brightness_min": 0.0, "field_fraction_min": 0.0, "focus_min": 0.0, "ood_threshold": 1e9,
        "field_roundness_min": 0.0,
    })
    result = predict_image(lenient, dark)
    assert result.gradable is True and result.in_distribution is True, result.gradability_reasons
    # The same through the predict pipeline's typed block (predict.gradability.*).
    from qsight_pipeline.pipelines.predict.nodes import predict_grades

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(dark).save(folder / "dark.png")
    strict_table, _ = predict_grades(checkpoint, PredictParams(input_dir=str(folder)))
    lenient_table, _ = predict_grades(checkpoint, PredictParams.model_validate({"input_dir": str(folder), "gradability": {
        "brightness_min": 0.0, "field_fraction_min": 0.0, "focus_min": 0.0, "ood_threshold": 1e9,
        "field_roundness_min": 0.0}}))
    assert strict_table["decision"][0] == "refer for manual grading"
    assert bool(lenient_table["gradable"][0]) and lenient_table["decision"][0] != "refer for manual grading"


def test_a_model_saved_before_the_gate_grades_with_a_warning(smoke_project, tmp_path, caplog):
    """Documented fallback: no gate, a warning naming the command that fits it, empty gate fields."""
    from qsight_pipeline.pipelines.predict.nodes import predict_grades

    checkpoint = copy.deepcopy(load_checkpoint_file(_model_dir(smoke_project) / "complete_checkpoint.pth"))
    del checkpoint["model_info"]["gates"]
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(next(SAMPLE.glob("*.jpeg")), folder / "a.jpeg")
    with caplog.at_level(logging.WARNING):
        table, _ = predict_grades(checkpoint, PredictParams(input_dir=str(folder)))
    assert "kedro run --pipelines ensemble" in caplog.text
    row = table.iloc[0]
    assert row["gradable"] is pd.NA and row["in_distribution"] is pd.NA
    assert row["decision"] in ("refer", "no referral") and row["gate_reasons"] == ""


def test_the_pipeline_and_the_api_gate_alike(smoke_project, tmp_path):
    from qsight_pipeline.pipelines.predict.nodes import predict_grades, prediction_row

    folder = tmp_path / "images"
    folder.mkdir()
    first = sorted(SAMPLE.glob("*.jpeg"))[0]
    shutil.copy(first, folder / "clean.jpeg")
    photograph = np.asarray(Image.open(first).convert("RGB"))
    Image.fromarray(np.zeros_like(photograph)).save(folder / "blank.png")
    Image.fromarray(non_fundus_pictures(1, 256)["text"][0]).save(folder / "text.png")
    checkpoint = load_checkpoint_file(_model_dir(smoke_project) / "complete_checkpoint.pth")
    table, _ = predict_grades(checkpoint, PredictParams(input_dir=str(folder)))
    loaded = load_model(_model_dir(smoke_project))
    paths = sorted(folder.iterdir())
    for path, result, (_, row) in zip(paths, predict_images(loaded, paths), table.iterrows(), strict=True):
        expected = prediction_row(result, path, path.stem)
        for column in ("decision", "gradable", "in_distribution", "gate_reasons", "refer", "needs_review"):
            assert row[column] == expected[column], (path.name, column)
    decisions = dict(zip(table["image"], table["decision"], strict=True))
    assert decisions["blank"] == decisions["text"] == "refer for manual grading"


def test_without_the_image_caches_only_distance_and_resolution_are_fitted(caplog):
    """`kedro run --pipelines ensemble` after the image cache was deleted: a warning, no image bounds."""
    from qsight_pipeline.pipelines.ensemble.nodes import fit_gate

    rng = np.random.default_rng(0)
    cache = {"train_features": rng.normal(size=(60, 4)), "val_features": rng.normal(size=(30, 4))}
    manifest = pd.DataFrame({"split": ["train"] * 3, "path": [str(p) for p in sorted(SAMPLE.glob("*.jpeg"))[:3]]})
    with caplog.at_level(logging.WARNING):
        gates = fit_gate(cache, None, manifest, GateParams())
    assert "kedro run --pipelines ingestion" in caplog.text
    bounds = gates["gradability"]["bounds"]
    assert bounds["focus"]["min"] is None and bounds["resolution"]["min"] is not None
    assert gates["ood"]["threshold"] > 0


def test_the_page_shows_no_grade_for_a_gated_photograph(smoke_project, monkeypatch):
    """The page's own code, with Streamlit's calls recorded (the browser test needs chromium)."""
    import importlib
    import sys

    st = pytest.importorskip("streamlit", reason="the inference extra (streamlit) is not installed")
    shown: list[str] = []
    for name in ("subheader", "markdown", "caption", "error"):
        monkeypatch.setattr(st, name, lambda text, *a, **k: shown.append(str(text)))
    monkeypatch.setattr(st, "file_uploader", lambda *a, **k: None)
    monkeypatch.setattr(st, "table", lambda *a, **k: None)
    monkeypatch.setattr(st, "image", lambda *a, **k: None)

    class _Column:
        def image(self, *a, **k):
            return None

    monkeypatch.setattr(st, "columns", lambda n: [_Column() for _ in range(n)])
    monkeypatch.setattr(sys, "argv", ["page", "--output-dir", str(_model_dir(smoke_project))])
    sys.modules.pop("qsight_pipeline.app.page", None)
    page = importlib.import_module("qsight_pipeline.app.page")
    loaded = load_model(_model_dir(smoke_project))
    photograph = np.asarray(Image.open(next(SAMPLE.glob("*.jpeg"))).convert("RGB"))
    shown.clear()
    page._show(loaded, "dark.png", (photograph * 0.2).astype(np.uint8))
    text = "\n".join(shown)
    assert "Not graded: refer for manual grading" in text and "underexposed" in text
    assert "Grade " not in text.split("\n")[0]
