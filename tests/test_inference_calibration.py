"""Temperature scaling, the referral operating point and their parameter blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from scipy.special import softmax

from qsight_pipeline.config import validate_block
from qsight_pipeline.config.predict import PredictParams
from qsight_pipeline.config.referral import ReferralParams
from qsight_pipeline.errors import ConfigError
from qsight_pipeline.inference import calibration as cal
from qsight_pipeline.inference.operating_point import fit_operating_point

CONF = Path(__file__).resolve().parents[1] / "conf" / "base"


def _overconfident(n: int, seed: int, sharpen: float = 3.0):
    """Labels drawn from softmax(z), and the logits ``sharpen * z`` of an overconfident model."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(logits, axis=1)])
    return sharpen * logits, labels


def test_temperature_scaling_undoes_overconfidence_and_lowers_the_ece():
    logits, labels = _overconfident(4000, seed=0)
    temperature = cal.fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = cal.expected_calibration_error(softmax(logits, axis=1), labels)
    after = cal.expected_calibration_error(cal.calibrated_probs(logits, temperature), labels)
    assert after < 0.03 < before


def test_threshold_is_the_most_specific_one_reaching_the_target_sensitivity():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 500)
    scores = np.clip((labels >= 2) * 0.3 + rng.uniform(0, 0.7, 500), 0, 1)
    threshold = cal.choose_threshold(scores, labels, 0.9)
    point = cal.sensitivity_specificity(scores, labels, threshold)
    assert point["sensitivity"] >= 0.9
    # One notch higher and the target is missed.
    higher = np.min(scores[scores > threshold])
    assert cal.sensitivity_specificity(scores, labels, higher)["sensitivity"] < 0.9


def test_wilson_interval_matches_the_textbook_value():
    # 17 of 18: Wilson 95% interval 0.742 to 0.990 (Newcombe 1998's method 3).
    low, high = cal.wilson_interval(17, 18)
    assert (round(low, 3), round(high, 3)) == (0.742, 0.990)
    assert cal.wilson_interval(0, 0) == (None, None)


def _evaluation(seed: int, n: int = 300):
    logits, labels = _overconfident(n, seed)
    heads = {f"logits_{h}": logits + np.random.default_rng(seed + i).normal(0, 0.5, logits.shape)
             for i, h in enumerate(("head_a", "head_b"))}
    return {"labels": labels, "outputs": heads,
            "probabilities": {"ensemble": softmax(logits, axis=1),
                              "head_a": softmax(heads["logits_head_a"], axis=1),
                              "head_b": softmax(heads["logits_head_b"], axis=1)}}


def test_operating_point_is_chosen_on_validation_and_reported_on_test():
    evaluation = {"val": _evaluation(0), "test": _evaluation(1)}
    result = fit_operating_point(evaluation, ReferralParams(target_sensitivity=0.85, review_fraction=0.2))
    referral = result["referral"]
    assert referral["validation"]["sensitivity"] >= 0.85
    assert result["temperatures"]["ensemble"] == pytest.approx(3.0, rel=0.25)
    val_probs = cal.calibrate_split(evaluation["val"], result["temperatures"])["ensemble"]
    review_share = (cal.entropy(val_probs) > referral["review_entropy_threshold"]).mean()
    assert review_share == pytest.approx(0.2, abs=0.01)
    test_point = result["report"]["test_operating_point"]
    low, high = test_point["sensitivity_ci95"]
    assert low < test_point["sensitivity"] < high
    ece = result["report"]["quality"]["test"]["ece"]["ensemble"]
    assert ece["after"] < ece["before"]


@pytest.mark.parametrize(
    ("model", "block"), [(ReferralParams, "referral"), (PredictParams, "predict")]
)
def test_yaml_defaults_are_the_models_defaults(model, block):
    values = yaml.safe_load((CONF / f"parameters_{block}.yml").read_text())[block]
    assert model.model_validate(values) == model()


def test_bad_referral_values_name_the_key_and_the_range():
    with pytest.raises(ConfigError, match=r"referral.target_sensitivity: Input should be less than or equal to 1, got 1.5"):
        validate_block(ReferralParams, {"target_sensitivity": 1.5}, "referral")
    with pytest.raises(ConfigError, match=r"referral.review_fraction: Input should be less than 1, got 1.0"):
        validate_block(ReferralParams, {"review_fraction": 1.0}, "referral")
    with pytest.raises(ConfigError, match=r"referral.target_sensitivity: Input should be greater than 0, got 0.0"):
        validate_block(ReferralParams, {"target_sensitivity": 0.0}, "referral")
    with pytest.raises(ValidationError, match="device"):
        PredictParams(device="gpu")
