"""The ensemble earns its place: the gate against the mean of the heads' calibrated probabilities
and the best single head on validation, the fusion kept, and every entry point grading by it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qsight_pipeline.config import EnsembleParams
from qsight_pipeline.errors import UserError
from qsight_pipeline.files.safe_pickle import safe_load
from qsight_pipeline.inference import fusion
from qsight_pipeline.inference.export import onnx_metadata
from qsight_pipeline.inference.graph import InferenceGraph
from qsight_pipeline.inference.loading import load_checkpoint_file, loaded_from_checkpoint
from qsight_pipeline.models.fusion_rules import saved_fusion
from qsight_pipeline.models.hybrid import ModelConfig, build_model
from qsight_pipeline.training import trainer, workflow
from qsight_pipeline.training.metrics import grading_metrics, quadratic_weighted_kappa
from qsight_pipeline.training.stages import ScheduleError, parse_stages

HEADS3 = ("head_a", "head_b", "quantum_head")


def _tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig.from_params(
        {"encoder_type": "resnet", "encoder_name": "test_resnet", "pretrained": False,
         "compressed_dim": 8, "head_hidden_dim": 8, "gate_hidden_dim": 8},
        {"enabled": False}, 32)).eval()


def test_the_mean_fusion_grades_by_the_mean_of_the_calibrated_heads():
    model = _tiny_model()
    temperatures = {"head_a": 0.5, "head_b": 2.0, "ensemble": 1.5}
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ensemble, heads, weights, entropy, _, referable, *_ = InferenceGraph(model, temperatures, "mean")(images)
        gated = InferenceGraph(model, temperatures)(images)
        out = model(images, active_mask=(1, 1, 0))
    expected = F.softmax(heads[:, :2].mean(dim=1).log() / 1.5, dim=-1)
    torch.testing.assert_close(ensemble, expected)
    torch.testing.assert_close(weights, torch.tensor([[0.5, 0.5, 0.0]] * 4))
    torch.testing.assert_close(referable, ensemble[:, 2:].sum(dim=1))
    # The gate's fusion is today's: its weights, its fused probabilities under the temperature.
    torch.testing.assert_close(gated[0], F.softmax(out["fused_probs"].log() / 1.5, dim=-1))
    torch.testing.assert_close(gated[2], out["head_weights"])
    torch.testing.assert_close(gated[1], heads)


def test_a_model_saved_before_the_choice_is_graded_by_its_gate_and_an_unknown_rule_is_refused():
    assert saved_fusion({}) == "gated"
    assert saved_fusion({"fusion": {"rule": "mean", "setting": "auto"}}) == "mean"
    with pytest.raises(UserError, match=r"'median'.*kedro run --pipelines ensemble"):
        saved_fusion({"fusion": {"rule": "median"}})


def _evaluation(gated_probs_of, n=80, seed=0):
    """A trainer-like evaluation of val and test: three noisy heads, the gate's fusion given."""
    rng = np.random.default_rng(seed)
    result = {}
    for split in ("val", "test"):
        labels = rng.integers(0, 5, n)
        logits = {h: 3.0 * np.eye(5)[labels] + rng.normal(0, 2.2, (n, 5)) for h in HEADS3}
        gated = gated_probs_of(labels, logits)
        weights = np.tile([0.98, 0.01, 0.01], (n, 1))
        result[split] = {
            "labels": labels,
            "outputs": {**{f"logits_{h}": v for h, v in logits.items()}, "head_weights": weights},
            "probabilities": {"ensemble": gated},
            "metrics": {"ensemble": grading_metrics(labels, gated)},
        }
    return result


def _softmax(logits):
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


@pytest.mark.parametrize(("setting", "gate", "rule", "ending"), [
    ("auto", "selector", "mean", "QWK), so the model fuses its heads by the mean."),
    ("auto", "perfect", "gated", "so the model keeps the gate."),
    ("mean", "perfect", "mean", "ensemble.fusion is set to mean, so the model fuses its heads by the mean."),
])
def test_the_gate_is_kept_only_when_it_beats_the_mean_on_validation(setting, gate, rule, ending):
    pick = {"selector": lambda labels, logits: _softmax(logits["head_a"]),
            "perfect": lambda labels, logits: np.eye(5)[labels] * 0.96 + 0.01}[gate]
    evaluation = _evaluation(pick)
    params = EnsembleParams(fusion=setting, seeds=1)
    record = fusion.compare_fusions(None, {}, [], trainer.TrainerSettings(), params, evaluation)

    val = record["validation"]
    assert record["rule"] == rule and record["seeds"] == [42]
    assert val["gated"]["mean"] == quadratic_weighted_kappa(
        evaluation["val"]["labels"], evaluation["val"]["probabilities"]["ensemble"].argmax(1))
    assert val["best_head"] == max(val["heads"].values()) == val["heads"][record["best_head"]]
    # Three heads with independent noise: their mean beats any one of them.
    assert val["mean"] > val["best_head"]
    assert record["winner"] == ("gated" if gate == "perfect" else "mean")
    assert record["sentence"].startswith("On validation the ") and record["sentence"].endswith(ending)
    assert f"{val['mean']:.3f}" in record["sentence"] and "(one seed)" in record["sentence"]
    json.dumps(record)  # plain data, no NaN

    # The evaluation with the fusion kept: the mean's QWK, or the gate's untouched.
    fused = fusion.with_fusion(evaluation["val"], rule, record["head_temperatures"])
    expected = val["mean"] if rule == "mean" else val["gated"]["mean"]
    assert fused["metrics"]["ensemble"]["quadratic_weighted_kappa"] == pytest.approx(expected)

    weights = fusion.gate_weight_distribution(evaluation["test"])
    assert sum(weights["counts"]["head_a"]) == 80 and weights["saturated"] == 0.0
    assert weights["mean"]["head_a"] == pytest.approx(0.98)


def test_a_gate_that_leads_by_less_than_its_interval_shows_gives_way_to_the_mean():
    record = {
        "setting": "auto", "rule": "mean", "winner": None, "seeds": [42, 43, 44, 45, 46],
        "best_head": "quantum_head",
        "validation": {"gated": {"mean": 0.874, "low": 0.859, "high": 0.888}, "mean": 0.861,
                       "best_head": 0.848},
        "gate_vs_mean": {"mean": 0.013, "low": -0.002, "high": 0.027},
    }
    assert fusion.fusion_sentence(record) == (
        "On validation the gated ensemble leads with QWK 0.874 [0.859, 0.888] over 5 seeds, "
        "against 0.861 for the mean of the heads' calibrated probabilities and 0.848 for the best "
        "single head (the quantum head), but not detectably (+0.013 [-0.002, +0.027] QWK over the "
        "mean), so the model fuses its heads by the simpler mean.")


def test_the_gate_entropy_bonus_pays_a_gate_that_weighs_every_head():
    stage = parse_stages([{"name": "ensemble", "num_epochs": 1}])[0]
    assert stage.loss_weights["gate_entropy"] == 0.1
    grades = torch.tensor([0, 1, 2, 3])
    logits = torch.randn(4, 5)
    fused = F.softmax(logits, dim=-1)

    def total(weights):
        out = {"logits_head_a": logits, "logits_head_b": logits, "logits_quantum_head": logits,
               "fused_probs": fused, "head_weights": weights}
        return float(trainer._losses(out, grades, list(HEADS3), stage, None)["total"])

    even, one_hot = torch.full((4, 3), 1 / 3), torch.tensor([[1.0, 0.0, 0.0]] * 4)
    assert total(one_hot) - total(even) == pytest.approx(0.1, abs=1e-5)
    with pytest.raises(ScheduleError, match="loss_weights"):
        parse_stages([{"name": "ensemble", "num_epochs": 1, "loss_weights": {"gate_entropy": -1}}])


def _smoke_checkpoint(smoke_project):
    return load_checkpoint_file(smoke_project.data("06_models/trained_model/complete_checkpoint.pth"))


def test_the_ensemble_pipeline_says_which_fusion_wins_and_every_entry_point_uses_it(smoke_project):
    checkpoint = _smoke_checkpoint(smoke_project)
    summary, info = checkpoint["training_summary"], checkpoint["model_info"]
    chosen = summary["fusion"]
    assert chosen["rule"] in ("gated", "mean") and chosen["seeds"] == [42, 43, 44, 45, 46]
    assert chosen["validation"]["gated"]["n"] == 5 and chosen["sentence"].startswith("On validation")
    assert info["fusion"] == {key: chosen[key] for key in ("rule", "setting", "sentence")}
    loaded = loaded_from_checkpoint(checkpoint)
    assert loaded.graph.fusion == chosen["rule"] and onnx_metadata(loaded)["fusion"] == chosen["rule"]

    # The summary's ensemble is the fusion kept: recomputed from the feature cache.
    cache = safe_load(smoke_project.data("06_models/trained_model/quantum_training_data.pkl"))
    test = workflow.evaluate_on_cache(loaded.model, cache, trainer.TrainerSettings(device="cpu"),
                                      batch_size=32, splits=("test",))["test"]
    fused = fusion.with_fusion(test, chosen["rule"], chosen["head_temperatures"])
    assert fused["metrics"]["ensemble"]["quadratic_weighted_kappa"] == pytest.approx(
        summary["evaluation"]["test"]["ensemble"]["quadratic_weighted_kappa"])
    assert chosen["gate_weights"]["test"]["images"] == len(test["labels"])

    report = smoke_project.data("08_reporting/report.html").read_text(encoding="utf-8")
    assert chosen["sentence"].replace("'", "&#x27;") in report and 'id="figure-gate_weights_test.png"' in report
    assert smoke_project.data("08_reporting/figures/gate_weights_test.png").is_file()


def test_a_model_saved_before_the_fusion_choice_still_loads_with_its_gate(smoke_project):
    checkpoint = _smoke_checkpoint(smoke_project)
    old = {**checkpoint, "model_info": {k: v for k, v in checkpoint["model_info"].items() if k != "fusion"}}
    loaded = loaded_from_checkpoint(old)
    assert loaded.graph.fusion == "gated"
    images = torch.randn(2, 3, *[loaded.preprocessing["image_size"]] * 2)
    with torch.no_grad():
        graded = loaded.graph(images)
        out = loaded.model(images, active_mask=loaded.graph.active)
    temperature = loaded.temperatures["ensemble"]
    torch.testing.assert_close(graded[0], F.softmax(out["fused_probs"].log() / temperature, dim=-1))
