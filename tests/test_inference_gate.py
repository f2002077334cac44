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
from qsight_pipeline.errors import ConfigError, UserError
from qsight_pipeline.inference import gate as gating
from qsight_pipeline.inference import gradability, ood
from qsight_pipeline.inference.gate_eval import CORRUPTIONS, non_fundus_pictures
from qsight_pipeline.inference.loading import load_checkpoint_file, loaded_from_checkpoint
from qsight_pipeline.inference.ood import OodSplits
from qsight_pipeline.inference.predict import decode, gate_reasons, normalise

SAMPLE = Path(__file__).resolve().parents[1] / "data/01_raw/sample/resized_train/resized_train"
BOUNDS = gating.fit_gradability()  # the absolute bounds, gate.gradability's defaults


def _retina(side: int | None = None, rows: tuple[int, int] | None = None) -> np.ndarray:
    """scikit-image's real fundus photograph (1411 px square), cut to ``rows`` and resized."""
    data = pytest.importorskip("skimage.data", reason="scikit-image (the dev extra) is not installed")
    picture = data.retina()
    if rows:
        picture = picture[rows[0] : rows[1]]
    if side:
        height = round(picture.shape[0] * side / picture.shape[1])
        picture = np.asarray(Image.fromarray(picture).resize((side, height), Image.Resampling.LANCZOS))
    return picture


def _reasons(photograph: np.ndarray) -> list[str]:
    return gating.check_gradability(gating.photograph_measures(photograph), BOUNDS)[0]


def _failed(reasons: list[str]) -> list[str]:
    """The measures named by the reasons (each ends ``[measure value < bound]``), in order."""
    return [reason.rsplit("[", 1)[1].split()[0] for reason in reasons]


def test_the_bounds_are_absolute_not_fitted_on_the_training_photographs():
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 40, (4, 32, 32, 3), dtype=np.uint8)
    fitted = [gating.fit_gradability(GateParams().gradability, images, sizes)
              for images, sizes in ((None, None), (dark, [(64, 48)] * 4))]
    assert fitted[0]["bounds"] == fitted[1]["bounds"]  # the training pictures change nothing
    bounds = fitted[0]["bounds"]
    assert bounds["resolution"] == {"min": 200.0, "max": None}
    assert bounds["blur"] == {"min": None, "max": 0.6}
    assert "not fitted" in fitted[0]["fitted_on"]
    # ... they are only checked against them (the warning names the setting).
    assert fitted[1]["training_check"]["failing"] == 4 and fitted[1]["training_check"]["files_below_resolution"] == 4


@pytest.mark.parametrize(
    "side, rows",
    [(2000, None), (1411, None), (1024, None), (512, None), (256, None),
     (None, (250, 1161)), (None, (400, 1011)), (1024, (176, 1234))],  # cut at top and bottom
)
def test_a_real_fundus_photograph_is_gradable_at_any_size_and_crop(side, rows):
    photograph = _retina(side, rows)
    assert _reasons(photograph) == []
    measures = gating.photograph_measures(photograph)
    assert measures["resolution"] == pytest.approx(0.99 * (side or 1411), rel=0.02)  # field width


def test_the_bundled_sample_photographs_are_gradable():
    files = sorted(SAMPLE.glob("*.jpeg"))[::10]
    assert [f.name for f in files if _reasons(np.asarray(Image.open(f).convert("RGB")))] == []


def _sample_photograph() -> np.ndarray:
    return np.asarray(Image.open(sorted(SAMPLE.glob("*.jpeg"))[0]).convert("RGB"))


# Each corruption, the reason it must give, and the other reasons that are true of it.
CORRUPTED = {
    "heavy_blur": ("out of focus", set()),
    "underexposed": ("underexposed", set()),
    "overexposed": ("overexposed", set()),
    "field_cropped_out": ("no round field edge at the left and right", {"the lit area is not a round fundus field"}),
    "half_darkened": ("unevenly lit", {"underexposed in part"}),
    "random_noise": ("noisy", set()),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTED))
@pytest.mark.parametrize("photograph", ["retina", "sample"])
def test_a_corrupted_photograph_is_not_gradable_with_the_right_reason(kind, photograph):
    clean = _retina(512) if photograph == "retina" else _sample_photograph()
    assert _reasons(clean) == []
    corrupted = CORRUPTIONS[kind](clean, np.random.default_rng(0))
    reasons = _reasons(corrupted)
    expected, also_true = CORRUPTED[kind]
    assert any(r.startswith(expected) for r in reasons), reasons
    others = {r.split(" (")[0].split(" [")[0] for r in reasons if not r.startswith(expected)}
    assert others <= also_true, reasons
    assert all("[" in r and "]" in r for r in reasons)  # each names what was measured


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "camera", "page", "immunohistochemistry"])
def test_a_photograph_that_is_no_fundus_photograph_is_not_gradable(name):
    data = pytest.importorskip("skimage.data", reason="scikit-image (the dev extra) is not installed")
    reasons = _reasons(getattr(data, name)())
    assert "field_side_height" in _failed(reasons), reasons


def test_drawn_pictures_and_a_small_photograph_are_not_gradable():
    drawn = non_fundus_pictures(1, 256)
    assert _failed(_reasons(np.zeros((256, 256, 3), np.uint8)))[0] == "field_fraction"
    assert all(_reasons(pictures[0]) for pictures in drawn.values())
    assert "field_side_height" in _failed(_reasons(drawn["text"][0]))
    reasons = _reasons(_retina(150))
    assert [r.split(" [")[0] for r in reasons] == [gradability.REASONS[("resolution", "min")]]


def test_the_measures_are_the_published_estimators():
    data = pytest.importorskip("skimage.data", reason="scikit-image (the dev extra) is not installed")
    from skimage.measure import blur_effect

    gray = data.camera().astype(np.float64)
    interior = np.zeros(gray.shape, dtype=bool)
    interior[2:-1, 2:-1] = True  # the part scikit-image sums over
    assert gradability.blur_effect(gray, interior) == pytest.approx(blur_effect(gray / 255.0), rel=1e-9)
    flat = 100.0 + np.random.default_rng(0).normal(0.0, 8.0, (256, 256))
    assert gradability.noise_sigma(flat) == pytest.approx(8.0, rel=0.03)


def _splits(logits: bool = True, seed: int = 0) -> OodSplits:
    rng = np.random.default_rng(seed)  # features in one orthant, as after an activation
    train, val = np.abs(rng.normal(size=(300, 8))), np.abs(rng.normal(size=(100, 8)))
    weights = rng.normal(size=(8, 5))
    return OodSplits(train, val, train @ weights if logits else None, val @ weights if logits else None)


def test_every_detector_is_fitted_with_its_own_conformal_threshold():
    fitted = gating.fit_ood(_splits(), "knn", pass_rate=0.95)
    assert set(fitted["detectors"]) == {"mahalanobis", "knn", "energy", "vim"}
    assert fitted["detector"] == "knn" and fitted["threshold"] == fitted["detectors"]["knn"]["threshold"]
    for name, entry in fitted["detectors"].items():
        assert entry["validation_pass_rate"] >= 0.95 and entry["guaranteed"], name
    assert np.asarray(fitted["detectors"]["mahalanobis"]["params"]["precision"]).shape == (8, 8)  # plain lists
    far = np.full((1, 8), -3.0)  # far away, and in no training feature's direction
    for name in ("mahalanobis", "knn"):
        assert ood.ood_score(far, fitted, detector=name)[0] > fitted["detectors"][name]["threshold"], name
    # Without the heads' logits only the feature detectors are fitted; asking for energy is refused.
    assert set(gating.fit_ood(_splits(logits=False))["detectors"]) == {"mahalanobis", "knn"}
    with pytest.raises(ConfigError, match="'?energy'?.*mahalanobis.*knn"):  # what is available
        gating.fit_ood(_splits(logits=False), "energy")
    with pytest.raises(ConfigError, match="'odin'.*mahalanobis.*knn"):
        ood.get_detector("odin")


def test_the_threshold_override_leaves_the_saved_gate_alone():
    fitted = gating.fit_ood(_splits(), "mahalanobis")
    overridden = gating.effective_gates(
        {"format": gating.GATES_FORMAT, "gradability": {"bounds": {}}, "ood": fitted},
        {"ood_threshold": 1e9, "blur_max": 0.9},
    )
    assert overridden["ood"]["threshold"] == 1e9 and overridden["gradability"]["bounds"]["blur"]["max"] == 0.9
    assert fitted["threshold"] != 1e9


def test_the_scores_are_pytorch_oods():
    pytorch_ood = pytest.importorskip("pytorch_ood.detector", reason="the inference extra is not installed")
    import torch
    from sklearn.covariance import LedoitWolf

    splits, rng = _splits(), np.random.default_rng(1)
    queries = rng.normal(size=(20, 8)) * 1.5
    weights, bias = rng.normal(size=(5, 8)), rng.normal(size=5)
    knn = ood.DETECTORS["knn"]
    params = ood.NearestNeighbours.fit(splits.train_features, k=5)
    theirs = pytorch_ood.KNN(None, k=5).fit_features(torch.tensor(splits.train_features), torch.zeros(300))
    np.testing.assert_allclose(knn.score(queries, None, params),
                               theirs.predict_features(torch.tensor(queries)).numpy(), rtol=1e-9)
    logits = queries @ weights.T + bias
    np.testing.assert_allclose(ood.DETECTORS["energy"].score(queries, logits, {}),
                               pytorch_ood.EnergyBased.score(torch.tensor(logits)).numpy(), rtol=1e-12)
    # ViM with a linear last layer and its origin -pinv(W) b is pytorch-ood's ViM.
    vim = pytorch_ood.ViM(None, 4, torch.tensor(weights), torch.tensor(bias))
    vim.fit_features(torch.tensor(splits.train_features).float(), torch.zeros(300))
    origin = -(np.linalg.pinv(weights) @ bias)
    ours = ood.fit_vim(splits.train_features, splits.train_features @ weights.T + bias, 4, origin)
    np.testing.assert_allclose(ood.vim_score(queries, logits, ours),
                               vim.predict_features(torch.tensor(queries).float()).numpy(), rtol=1e-3)  # float32
    # Mahalanobis (class-agnostic, as before) is scikit-learn's Ledoit-Wolf distance.
    estimator = LedoitWolf().fit(splits.train_features)
    np.testing.assert_allclose(ood.Mahalanobis.score(queries, None, ood.Mahalanobis.fit(splits.train_features)),
                               np.sqrt(estimator.mahalanobis(queries)), rtol=1e-9)


def test_a_gate_of_the_previous_format_is_read_as_it_was_saved():
    fitted = gating.fit_ood(_splits(), "mahalanobis")
    entry = fitted["detectors"]["mahalanobis"]
    old = {"format": "qsight.gates/2", "gradability": BOUNDS,
           "ood": {"method": "Mahalanobis distance", "threshold": entry["threshold"], "rank": entry["rank"],
                   **entry["params"]}}
    gates = gating.effective_gates(old)
    assert gates["ood"]["detector"] == "mahalanobis" and gates["ood"]["threshold"] == entry["threshold"]
    queries = np.random.default_rng(2).normal(size=(5, 8))
    np.testing.assert_allclose(gating.ood_score(queries, gates["ood"]), ood.ood_score(queries, fitted))


def test_features_wider_than_256_are_projected_onto_their_principal_components():
    rng = np.random.default_rng(3)
    basis = rng.normal(size=(40, 300))  # 300-dim features on a 40-dim subspace, plus noise
    train = np.abs(rng.normal(size=(400, 40))) @ basis + 0.01 * rng.normal(size=(400, 300))
    val = np.abs(rng.normal(size=(150, 40))) @ basis + 0.01 * rng.normal(size=(150, 300))
    fitted = gating.fit_ood(OodSplits(train, val, space="encoder"), "mahalanobis")
    assert (fitted["space"], fitted["features"], fitted["width"]) == ("encoder", "encoder_features", 300)
    projection = fitted["projection"]
    assert np.asarray(projection["components"]).shape == (ood.MAX_GATE_WIDTH, 300)
    assert np.asarray(fitted["detectors"]["mahalanobis"]["params"]["precision"]).shape == (256, 256)
    assert fitted["validation_pass_rate"] >= 0.95
    far = rng.normal(size=(5, 300)) * 3.0  # off the training subspace
    assert (ood.ood_score(far, fitted) > fitted["threshold"]).all()
    # Narrow features are scored as they are.
    assert gating.fit_ood(_splits())["projection"] is None


def _cache(encoder: bool, rng: np.random.Generator) -> dict:
    cache = {}
    for split, count in (("train", 80), ("val", 40), ("test", 20)):
        cache[f"{split}_features"] = rng.normal(size=(count, 6)).astype(np.float32)
        cache[f"{split}_logits_head_a"] = rng.normal(size=(count, 5)).astype(np.float32)
        cache[f"{split}_logits_head_b"] = rng.normal(size=(count, 5)).astype(np.float32)
        if encoder:
            cache[f"{split}_encoder_features"] = rng.normal(size=(count, 12)).astype(np.float32)
    return cache


def test_the_gate_is_fitted_on_the_encoder_features_of_the_feature_cache(caplog):
    import pickle

    from qsight_pipeline.files.safe_pickle import safe_loads

    cache = safe_loads(pickle.dumps(_cache(True, np.random.default_rng(4))))  # plain arrays: allowed
    splits = gating.ood_splits(cache)
    assert splits.space == "encoder" and splits.train_features.shape == (80, 12)
    mean_logits = (cache["val_logits_head_a"] + cache["val_logits_head_b"]) / 2
    np.testing.assert_allclose(splits.val_logits, mean_logits, rtol=1e-6)
    gates = gating.fit_gates(None, None, splits)
    assert gates["ood"]["space"] == "encoder" and set(gates["ood"]["detectors"]) == set(ood.DETECTORS)
    outputs = {"compressed_features": np.zeros(6), "encoder_features": np.ones(12)}
    assert gating.space_features(outputs, gates) is outputs["encoder_features"]
    # A cache written before the encoder features were stored: the compressed ones, with a warning.
    with caplog.at_level(logging.WARNING):
        old = gating.ood_splits(_cache(False, np.random.default_rng(4)))
    assert old.space == "compressed" and old.train_features.shape == (80, 6)
    assert "kedro run --pipelines features" in caplog.text


def test_a_gate_saved_without_a_space_scores_the_compressed_features():
    fitted = gating.fit_ood(_splits(), "mahalanobis")
    saved = {key: value for key, value in fitted.items() if key not in ("space", "projection", "width")}
    saved["features"] = "compressed_features"
    gates = gating.effective_gates({"format": gating.GATES_FORMAT, "gradability": BOUNDS, "ood": saved})
    assert ood.ood_space(gates["ood"]) == "compressed"
    outputs = {"compressed_features": np.zeros(8), "encoder_features": np.ones(96)}
    assert gating.space_features(outputs, gates) is outputs["compressed_features"]
    queries = np.random.default_rng(5).normal(size=(4, 8))
    np.testing.assert_allclose(gating.ood_score(queries, gates["ood"]), ood.ood_score(queries, fitted))
    with pytest.raises(ConfigError, match="'pixels'.*kedro run --pipelines ensemble"):
        ood.ood_space({**saved, "space": "pixels"})


def test_the_graph_returns_the_encoder_features_last():
    import torch

    from qsight_pipeline.inference.graph import OUTPUT_NAMES, InferenceGraph
    from qsight_pipeline.models.hybrid import ModelConfig, build_model

    config = ModelConfig.from_params(
        {"encoder_type": "resnet", "encoder_name": "test_resnet", "pretrained": False,
         "compressed_dim": 8, "head_hidden_dim": 8, "gate_hidden_dim": 8}, {"enabled": False}, 32,
    )
    model = build_model(config).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        outputs = InferenceGraph(model, {})(images)
        pooled = model.encoder(images)
    assert OUTPUT_NAMES[-2:] == ("compressed_features", "encoder_features")
    assert len(outputs) == len(OUTPUT_NAMES) and outputs[-2].shape == (2, 8)
    torch.testing.assert_close(outputs[-1], pooled)


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
    assert saved["gradability"]["bounds"] == gating.fit_gradability()["bounds"]  # absolute, not fitted
    assert saved["gradability"]["training_check"]["failing"] == 0  # the sample's pictures pass them
    gate = loaded.training_summary["gate"]
    assert gate["gradability"]["bounds"]["blur"]["max"] == saved["gradability"]["bounds"]["blur"]["max"]
    evaluation = gate["evaluation"]
    assert evaluation["clean"]["pass_rate"] >= 0.9
    assert evaluation["corrupted"]["auroc"] >= 0.9
    assert evaluation["non_fundus"]["auroc"] >= 0.95
    # The detector in use is saved by name; all four are compared on the test split's sets.
    assert saved["ood"]["detector"] == GateParams().ood_detector == evaluation["detectors"]["in_use"]
    results = evaluation["detectors"]["results"]
    assert set(results) == {"mahalanobis", "knn", "energy", "vim"}
    for name, by_set in results.items():
        assert {"near_ood:shifted_camera", "non_fundus:photographs", "non_fundus:text"} <= set(by_set), name
        assert all(0.0 <= v["auroc"] <= 1.0 and 0.0 <= v["fpr_at_95_tpr"] <= 1.0 for v in by_set.values())
    photographs = evaluation["sets"]["non_fundus:photographs"]
    assert photographs["images"] == 32 and photographs["pass_rate"] == 0.0
    assert "manual grading" in gate["rule"]
    from qsight_pipeline.reporting.tracking import summary_metrics  # what W&B and MLflow log

    assert summary_metrics(loaded.training_summary)["gate/corrupted/auroc"] == evaluation["corrupted"]["auroc"]
    # The report explains the rule and shows the figures.
    report = smoke_project.data("08_reporting/report.html").read_text(encoding="utf-8")
    assert "referred for manual grading" in report and "Gate" in report
    assert 'id="gate-detectors"' in report and f"{saved['ood']['detector']} (in use)" in report


def test_the_encoder_features_flag_every_non_fundus_photograph_and_an_old_gate_still_works(smoke_project):
    """The model trained on the sample: its gate scores the encoder's pooled features, and the
    score alone flags every non-fundus photograph of the test. A gate saved without a space (fitted
    on the compressed features, as before) still scores the compressed features, in predict as in
    the evaluation. (On this tiny 32 px model the barely trained compressed features flag them
    too; on the demo model they let 9 of 32 through: docs/benchmarks/demo-model.md.)"""
    import dataclasses

    from qsight_pipeline.files.safe_pickle import safe_load
    from qsight_pipeline.inference.gate_eval import (
        TEST_PHOTOGRAPHS,
        gate_results,
        model_outputs,
        non_fundus_photographs,
    )

    loaded = load_model(_model_dir(smoke_project))
    assert (loaded.gates["ood"]["space"], loaded.gates["ood"]["features"]) == ("encoder", "encoder_features")
    pictures = non_fundus_photographs(TEST_PHOTOGRAPHS, int(loaded.preprocessing["image_size"]))
    if pictures is None:
        pytest.skip("scikit-image's photographs are not installed")
    assert gate_results(loaded, pictures)["flagged_by_score"].all()
    cache = safe_load(next(smoke_project.path.glob("data/**/quantum_training_data.pkl")))
    assert cache["train_encoder_features"].dtype == np.float32
    assert cache["train_encoder_features"].shape[1] == loaded.model.encoder.num_features
    old_cache = {key: value for key, value in cache.items() if not key.endswith("_encoder_features")}
    fitted = gating.fit_gates(None, None, gating.ood_splits(old_cache), GateParams())
    for key in ("space", "projection", "width"):
        del fitted["ood"][key]  # as a model saved before the space was recorded
    old = dataclasses.replace(loaded, gates=gating.effective_gates(fitted))
    assert ood.ood_space(old.gates["ood"]) == "compressed"
    assert model_outputs(old, pictures)[0].shape == (len(pictures), cache["train_features"].shape[1])
    assert len(gate_results(old, pictures)["flagged_by_score"]) == len(pictures)
    import torch

    photograph = sorted(SAMPLE.glob("*.jpeg"))[0]
    result = predict_image(old, photograph)
    with torch.no_grad():
        picture = decode(photograph, old.preprocessing)[None]
        compressed = old.model(normalise(picture, old.preprocessing).to(old.device))["compressed"].cpu().numpy()
    expected = float(gating.ood_score(compressed, old.gates["ood"])[0])
    assert result.ood_distance == pytest.approx(expected, rel=1e-4, abs=1e-6)


def with_detector(gates: dict, name: str) -> dict:
    """``gates`` with the saved ``name`` detector in use (each is fitted with its own threshold)."""
    fitted = gates["ood"]["detectors"][name]
    return {**gates, "ood": {**gates["ood"], "detector": name, "threshold": fitted["threshold"]}}


@pytest.mark.parametrize("detector", ["energy", "vim"])
def test_a_gate_that_scores_the_logits_grades_new_photographs(smoke_project, detector):
    """`gate.ood_detector: energy` or `vim` (documented choices, fitted on the heads' logits):
    predict scores each photograph with the logits of the graph, the same score as the heads'
    own logits give, instead of failing for want of them."""
    import dataclasses

    import torch

    loaded = load_model(_model_dir(smoke_project))
    model = dataclasses.replace(loaded, gates=gating.effective_gates(with_detector(loaded.gates, detector)))
    photographs = [*sorted(SAMPLE.glob("*.jpeg"))[:2], _retina(512)]
    results = predict_images(model, photographs)
    for photograph, result in zip(photographs, results, strict=True):
        with torch.no_grad():
            picture = decode(photograph, model.preprocessing)[None]
            out = model.model(normalise(picture, model.preprocessing).to(model.device))
        logits = ((out["logits_head_a"] + out["logits_head_b"]) / 2).numpy()
        expected = float(ood.ood_score(out["encoder_features"].numpy(), model.gates["ood"], logits)[0])
        assert result.ood_distance == pytest.approx(expected, rel=1e-4, abs=1e-5)
        assert result.in_distribution is (expected <= model.gates["ood"]["threshold"])
        assert result.decision in ("refer", "no referral", "refer for manual grading")


def test_a_real_fundus_photograph_is_gradable_but_unlike_the_sample(smoke_project):
    """scikit-image's retina: another camera's good photograph. Gradable, and out of
    distribution for a model trained on the synthetic sample (that is the other check's job)."""
    loaded = load_model(_model_dir(smoke_project))
    for photograph in (_retina(512), _retina(None, (250, 1161))):
        result = predict_image(loaded, photograph)
        assert result.gradable is True, result.gradability_reasons
        assert result.in_distribution is False and result.decision == "refer for manual grading"
        assert gating.OOD_REASON in gate_reasons(result)


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
        "brightness_min": 0.0, "dark_fraction_max": 1.0, "ood_threshold": 1e9,
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
        "brightness_min": 0.0, "dark_fraction_max": 1.0, "ood_threshold": 1e9}}))
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


def test_without_the_image_caches_the_same_gate_is_fitted(caplog):
    """`kedro run --pipelines ensemble` after the image cache was deleted: the bounds are the
    absolute ones all the same, and the out-of-distribution score is fitted from the features."""
    from qsight_pipeline.pipelines.ensemble.nodes import fit_gate

    rng = np.random.default_rng(0)
    cache = {"train_features": rng.normal(size=(60, 4)), "val_features": rng.normal(size=(30, 4))}
    manifest = pd.DataFrame({"split": ["train"] * 3, "path": [str(p) for p in sorted(SAMPLE.glob("*.jpeg"))[:3]]})
    with caplog.at_level(logging.WARNING):
        gates = fit_gate(cache, None, manifest, GateParams())
    assert gates["gradability"]["bounds"] == BOUNDS["bounds"]
    check = gates["gradability"]["training_check"]
    assert (check["pictures"], check["files"], check["files_below_resolution"]) == (0, 3, 0)
    assert gates["ood"]["threshold"] > 0 and "gradability bounds" not in caplog.text


def test_a_model_with_a_gate_of_the_old_format_is_refused_naming_the_command():
    old = {"format": "qsight.gates/1", "gradability": {"bounds": {"focus": {"min": 1.0, "max": None}}},
           "ood": {"threshold": 1.0}}
    with pytest.raises(gating.StaleGateError, match="kedro run --pipelines ensemble") as caught:
        gating.effective_gates(old)
    assert isinstance(caught.value, UserError) and "qsight.gates/1" in str(caught.value)

