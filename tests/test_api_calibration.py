"""The Python API calibrates like `kedro run`: temperatures, referral and review thresholds fitted
on validation, returned in the summary and saved where `load_model` reads them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qsight_pipeline import (
    DatasetConfig,
    TrainingConfig,
    create_dataloaders,
    evaluate_hybrid_model,
    load_model,
    predict_image,
    save_model,
    train_hybrid_model,
)
from qsight_pipeline.errors import ConfigError
from qsight_pipeline.inference.graph import InferenceGraph

STAGES = [
    {"name": "classical", "num_epochs": 2, "learning_rate": 2e-3},
    {"name": "ensemble", "num_epochs": 1, "learning_rate": 1e-3},
]


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    from qsight_pipeline.data.sample import generate_sample

    root = tmp_path_factory.mktemp("api_calibration") / "sample"
    generate_sample(root, patients=16, seed=3, size=32)
    train, val, test, classes = create_dataloaders(
        DatasetConfig(root=root, batch_size=8, image_size=32, val_fraction=0.25, test_fraction=0.25),
        with_test=True,
    )
    config = TrainingConfig(
        stages=STAGES, referral={"target_sensitivity": 0.8, "review_fraction": 0.2},
        model={"encoder_name": "test_resnet", "pretrained": False, "compressed_dim": 8},
        ensemble={"fusion": "gated"},  # graded by the gate, which the checks below read
    )
    model, trained = train_hybrid_model(
        train, val, classes, config=config, encoder_type="resnet", quantum_enabled=False,
    )
    assert "test" not in trained["evaluation"] and trained["calibration"]["test_operating_point"] is None
    summary = evaluate_hybrid_model(model, test, trained, config)
    # The test adds the test split's figures and changes nothing that training measured.
    assert {k: v for k, v in summary.items() if k not in ("evaluation", "calibration")} == {
        k: v for k, v in trained.items() if k not in ("evaluation", "calibration")}
    assert summary["evaluation"]["val"] == trained["evaluation"]["val"]
    for key in ("temperatures", "referral"):
        assert summary["calibration"][key] == trained["calibration"][key]
    assert summary["evaluation"]["test"]["ensemble"]["n"] == len(test.dataset)
    folder = save_model(model, summary, tmp_path_factory.mktemp("api_model") / "trained")
    return model.eval(), summary, folder, next(iter(val))["image"]


def test_the_api_fits_temperatures_and_the_operating_point_on_validation(api_run):
    _, summary, _, _ = api_run
    calibration = summary["calibration"]
    temperatures = calibration["temperatures"]
    assert set(temperatures) == {"head_a", "head_b", "ensemble"}  # quantum head off
    assert all(0 < t < 25 for t in temperatures.values())
    referral = calibration["referral"]
    assert 0.0 <= referral["threshold"] <= 1.0
    assert referral["target_sensitivity"] == 0.8 and referral["review_fraction"] == 0.2
    assert referral["review_entropy_threshold"] is not None and referral["review_entropy_threshold"] >= 0
    # The report part, as in the pipeline's training_summary.json: ECE before/after, test point.
    assert set(calibration["quality"]) == {"val", "test"}
    assert calibration["quality"]["val"]["ece"]["ensemble"]["after"] is not None
    assert calibration["test_operating_point"]["threshold"] == referral["threshold"]
    assert summary["config"]["referral"] == {"target_sensitivity": 0.8, "review_fraction": 0.2}


def test_a_saved_api_model_loads_with_its_calibration(api_run):
    model, summary, folder, images = api_run
    loaded = load_model(folder)
    assert loaded.temperatures == pytest.approx(summary["calibration"]["temperatures"])
    assert loaded.referral == summary["calibration"]["referral"]
    assert loaded.preprocessing["image_size"] == 32
    assert loaded.training_summary["calibration"] == summary["calibration"]
    with torch.no_grad():
        raw = InferenceGraph(loaded.model, {})(images)  # identity temperatures
        calibrated = loaded.graph(images)
        # The weights survived the round trip: the loaded model is the trained one.
        fused = model(images, active_mask=(1, 1, 0))["fused_probs"]
    np.testing.assert_allclose(raw[0].numpy(), fused.numpy(), atol=1e-5)
    temperatures = loaded.temperatures
    assert any(abs(t - 1.0) > 1e-3 for t in temperatures.values()), temperatures  # T = 1 tests nothing
    for index, head in enumerate(("head_a", "head_b")):
        changed = (calibrated[1][:, index] - raw[1][:, index]).abs().max().item()
        assert (changed > 1e-4) == (abs(temperatures[head] - 1.0) > 1e-3), (head, temperatures)
    changed = (calibrated[0] - raw[0]).abs().max().item()
    assert (changed > 1e-4) == (abs(temperatures["ensemble"] - 1.0) > 1e-3)


def test_predictions_of_the_api_model_use_its_saved_threshold(api_run):
    _, summary, folder, images = api_run
    loaded = load_model(folder)
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    result = predict_image(loaded, image)
    referral = summary["calibration"]["referral"]
    # Noise is no fundus photograph: the gate fitted by train_hybrid_model refers it.
    assert result.gradable is False and result.decision == "refer for manual grading"
    assert result.refer and result.needs_review
    photograph = (images[0].permute(1, 2, 0).numpy() * loaded.preprocessing["std"]
                  + loaded.preprocessing["mean"])
    result = predict_image(loaded, (np.clip(photograph, 0, 1) * 255).astype(np.uint8))
    assert result.quality["field_fraction"] > 0.3
    if result.gradable and result.in_distribution:
        assert result.refer == (result.referable_probability >= referral["threshold"])
        assert result.needs_review == (result.entropy > referral["review_entropy_threshold"])


def test_the_api_fits_the_gate_and_save_model_keeps_it(api_run):
    _, summary, folder, _ = api_run
    loaded = load_model(folder)
    assert loaded.model_info["gates"] == summary["gates"]
    # The same absolute bounds as a kedro run's, though the loader knows no original files.
    assert loaded.gates["gradability"]["bounds"]["resolution"]["min"] == 200.0
    assert loaded.gates["gradability"]["training_check"]["files"] == 0
    assert loaded.gates["ood"]["validation_pass_rate"] >= 0.95
    # The out-of-distribution score is fitted on the encoder's pooled features, as a kedro run's.
    width = loaded.model.encoder.num_features
    assert (loaded.gates["ood"]["space"], loaded.gates["ood"]["width"]) == ("encoder", width)
    mean = loaded.gates["ood"]["detectors"]["mahalanobis"]["params"]["mean"]
    assert len(mean) == width and loaded.gates["ood"]["projection"] is None  # no wider than 256


def test_a_bad_referral_setting_is_refused_before_training(make_sample):
    root = make_sample("tanlikesmath", patients=8, size=32)
    train, val, classes = create_dataloaders(
        DatasetConfig(root=root, batch_size=8, image_size=32, val_fraction=0.25, test_fraction=0.25)
    )
    with pytest.raises(ConfigError, match="referral.target_sensitivity"):
        train_hybrid_model(
            train, val, classes, config=TrainingConfig(
                stages=STAGES, referral={"target_sensitivity": 1.5},
                model={"encoder_name": "test_resnet", "pretrained": False},
            ),
            encoder_type="resnet", quantum_enabled=False,
        )


def test_the_api_builds_the_same_typed_blocks_as_kedro_run():
    from qsight_pipeline.config import ModelParams, QuantumConfig, RunSettings

    config = TrainingConfig(seed=7, grad_clip=0.5, model={"encoder_name": "test_resnet"},
                            quantum={"n_qubits": 3})
    model, quantum, referral = config.blocks("resnet", quantum_enabled=False)
    assert model == ModelParams(encoder_type="resnet", encoder_name="test_resnet")
    assert quantum == QuantumConfig(n_qubits=3, enabled=False)
    settings = config.trainer_settings()
    assert isinstance(settings, RunSettings) and (settings.seed, settings.grad_clip) == (7, 0.5)
    with pytest.raises(ConfigError, match=r"model\.encoder_nme"):
        TrainingConfig(model={"encoder_nme": "x"}).blocks("resnet", quantum_enabled=False)
    with pytest.raises(ConfigError, match=r"run\.grad_clip"):
        TrainingConfig(grad_clip=-1).trainer_settings()


def test_every_run_key_is_settable_from_the_api_without_a_field_of_its_own():
    from qsight_pipeline.config import RunSettings

    # The keys that TrainingConfig has no named field for go in `run`: a knob added to
    # RunSettings (and the YAML) needs nothing more here.
    from qsight_pipeline.inference.api import _SET_ELSEWHERE

    named = {f for f in TrainingConfig.__dataclass_fields__ if f in RunSettings.model_fields}
    others = sorted(set(RunSettings.model_fields) - named - set(_SET_ELSEWHERE))
    assert others  # some keys (compile, channels_last, ...) are reached through `run` only
    values = {"compile": True, "channels_last": True}
    assert set(others) <= set(values), f"add a test value for {set(others) - set(values)}"
    settings = TrainingConfig(run={key: values[key] for key in others}).trainer_settings()
    assert all(getattr(settings, key) == values[key] for key in others)
    with pytest.raises(ConfigError, match=r"run\.num_wrkers"):
        TrainingConfig(run={"num_wrkers": 2}).trainer_settings()
    with pytest.raises(ConfigError, match=r"image_size.*DatasetConfig\.image_size"):
        TrainingConfig(run={"image_size": 64}).trainer_settings()
    with pytest.raises(ConfigError, match=r"TrainingConfig\.run.*seed.*TrainingConfig\(seed="):
        TrainingConfig(seed=3, run={"seed": 4}).trainer_settings()
