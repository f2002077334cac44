"""``kedro run --pipelines evaluate``: the trained model on another labelled data set (its node,
in process, with the smoke run's model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from qsight_pipeline.config import EvaluateParams
from qsight_pipeline.data.sample import Camera, generate_sample
from qsight_pipeline.errors import UserError
from qsight_pipeline.inference.external import SIDE_BY_SIDE, transfer_verdict
from qsight_pipeline.inference.graph import InferenceGraph
from qsight_pipeline.inference.loading import load_checkpoint_file, loaded_from_checkpoint
from qsight_pipeline.inference.predict import predict_images
from qsight_pipeline.pipelines.evaluate.nodes import add_external_to_report, evaluate_external


def test_external_validation_reports_the_model_the_gate_and_the_screening_decision(smoke_project, make_sample):
    root = make_sample("sovitrath", patients=6, size=256)
    checkpoint = load_checkpoint_file(smoke_project.data("06_models/trained_model/complete_checkpoint.pth"))
    result, table = evaluate_external(checkpoint, EvaluateParams.model_validate(
        {"dataset": {"type": "sovitrath", "root": str(root)}}))
    json.dumps(result)  # plain data
    images = result["dataset"]["images"]
    assert images == len(table) >= 10 and result["dataset"]["unreadable"] == 0
    assert set(table["true_grade"]) <= set(range(5)) and "decision" in table and "gradable" in table
    assert result["model"]["n"] == images and 0.0 <= result["gate"]["pass_rate"] <= 1.0
    gated = int((table["decision"] == "refer for manual grading").sum())
    assert result["gate"]["referred_for_manual_grading"] == gated
    assert (result["graded"] is None) == (gated == images)
    # With the gate, a photograph sent to manual grading counts as referred: never less sensitive.
    screening, model = result["screening_with_gate"], result["model_referral"]
    if model["sensitivity"] is not None:
        assert screening["sensitivity"] >= model["sensitivity"]


def test_a_missing_external_root_names_the_setting(smoke_project, tmp_path):
    checkpoint = load_checkpoint_file(smoke_project.data("06_models/trained_model/complete_checkpoint.pth"))
    with pytest.raises(UserError, match="evaluate.dataset.root"):
        evaluate_external(checkpoint, EvaluateParams.model_validate(
            {"dataset": {"type": "sovitrath", "root": str(tmp_path / "none")}}))


def _ece(probabilities, labels):
    return float(multiclass_calibration_error(
        torch.as_tensor(np.asarray(probabilities, dtype=np.float32)),
        torch.as_tensor(np.array(labels, dtype=np.int64)), num_classes=5, n_bins=10, norm="l1"))


def test_a_shifted_camera_says_what_changed_against_the_own_test_split(smoke_project, tmp_path):
    root = tmp_path / "other_camera"
    generate_sample(root, patients=8, seed=5, size=128, camera=Camera("shifted"))
    checkpoint = load_checkpoint_file(smoke_project.data("06_models/trained_model/complete_checkpoint.pth"))
    params = EvaluateParams.model_validate({"dataset": {"type": "tanlikesmath", "root": str(root)}})
    result, table = evaluate_external(checkpoint, params)

    # ECE after the saved temperatures is the ECE of the probabilities the table shows; before
    # them, it is the ECE of the model graded with every temperature at 1.
    shown = table[[f"prob_grade_{g}" for g in range(5)]].to_numpy()
    assert result["calibration"]["ensemble"]["after"] == pytest.approx(_ece(shown, table["true_grade"]), abs=1e-6)
    loaded = loaded_from_checkpoint(checkpoint)
    # every temperature at 1, the heads fused by the model's own rule (the smoke model's rule
    # depends on its training: gated or the mean of the heads)
    loaded.graph = InferenceGraph(loaded.model, {}, loaded.graph.fusion).eval()
    raw = [p.ensemble_probabilities for p in predict_images(loaded, list(table["path"]))]
    assert result["calibration"]["ensemble"]["before"] == pytest.approx(_ece(raw, table["true_grade"]), abs=1e-4)

    # Each figure beside the model's own test split's, and the change.
    summary = checkpoint["training_summary"]
    qwk = result["comparison"]["qwk"]
    assert qwk["internal_test"] == summary["evaluation"]["test"]["ensemble"]["quadratic_weighted_kappa"]
    assert qwk["external"] == result["model"]["quadratic_weighted_kappa"]
    assert qwk["change"] == pytest.approx(qwk["external"] - qwk["internal_test"])
    ece = result["comparison"]["ece_after_temperature"]
    assert ece["internal_test"] == summary["calibration"]["quality"]["test"]["ece"]["ensemble"]["after"]
    assert ece["external"] == result["calibration"]["ensemble"]["after"]
    gated = (table["decision"] == "refer for manual grading").mean()
    assert result["comparison"]["gate_pass_rate"]["external"] == pytest.approx(1 - gated)
    assert result["gate"]["gradable_rate"] == pytest.approx(table["gradable"].astype(bool).mean())
    assert result["gate"]["in_distribution_rate"] == pytest.approx(table["in_distribution"].astype(bool).mean())
    clean = summary["gate"]["evaluation"]["clean"]  # the gate's shares on the model's own test split
    for rate in ("gradable_rate", "in_distribution_rate"):
        side = result["comparison"][rate]
        assert side["internal_test"] == clean[rate] and 0.0 <= clean[rate] <= 1.0
        assert side["external"] == result["gate"][rate]
        assert side["change"] == pytest.approx(side["external"] - side["internal_test"])
    assert clean["pass_rate"] <= min(clean["gradable_rate"], clean["in_distribution_rate"])

    # The verdict: one sentence with the two QWKs and the rule's answer.
    transfers = qwk["external"] >= qwk["internal_test"] - params.transfer_tolerance
    verdict = result["verdict"]
    assert verdict.startswith(f"The model {'transfers' if transfers else 'does not transfer'} to this set: ")
    assert f"QWK {qwk['external']:.2f} against {qwk['internal_test']:.2f} on its own test split" in verdict
    assert f"ECE {ece['external']:.3f} against {ece['internal_test']:.3f}" in verdict
    assert verdict.count(".") - verdict.count("0.") == 1  # one sentence

    page = add_external_to_report(None, result)
    assert verdict.replace("'", "&#x27;") in page and 'id="external-comparison"' in page


def test_the_verdict_names_the_drop_and_what_the_gate_does():
    def comparison(internal, external, pass_rate, gradable=None, in_distribution=None):
        table = {name: {"internal_test": None, "external": None} for name, _ in SIDE_BY_SIDE}
        table["qwk"] = {"internal_test": internal, "external": external}
        table["ece_after_temperature"] = {"internal_test": 0.117, "external": 0.239}
        table["gate_pass_rate"]["external"] = pass_rate
        table["gradable_rate"] = {"external": gradable}
        table["in_distribution_rate"] = {"external": in_distribution}
        return table

    assert transfer_verdict(comparison(0.95, 0.27, 0.0, 0.0, 0.0), 0.1) == (
        "The model does not transfer to this set: QWK 0.27 against 0.95 on its own test split, "
        "ECE 0.239 against 0.117 after its saved temperatures, and the gate refers every "
        "photograph.")
    assert transfer_verdict(comparison(0.95, 0.88, 0.6, 0.9, 0.7), 0.1).startswith(
        "The model transfers to this set: QWK 0.88 against 0.95")
    assert transfer_verdict(comparison(0.95, 0.88, 0.6, 0.9, 0.7), 0.1).endswith(
        "and the gate refers 40% of the photographs (10% not gradable, 30% out of distribution).")
    assert transfer_verdict(comparison(0.95, 0.88, None), 0.05).startswith("The model does not transfer")
    assert transfer_verdict(comparison(0.95, 0.88, None), 0.05).endswith("and the model has no gate.")
    assert transfer_verdict(comparison(None, None, None), 0.1).startswith("Nothing to judge")


def test_ece_before_the_temperatures_undoes_each_heads_for_a_model_that_fuses_by_the_mean():
    from types import SimpleNamespace

    from scipy.special import softmax

    from qsight_pipeline.inference.external import calibration_change

    rng = np.random.default_rng(0)
    logits = {head: rng.normal(size=(40, 5)) * 3 for head in ("head_a", "head_b", "quantum_head")}
    temperatures = {"head_a": 2.0, "head_b": 0.7, "quantum_head": 1.5, "ensemble": 1.3}
    calibrated = {h: softmax(z / temperatures[h], axis=1) for h, z in logits.items()}
    mean = np.mean(list(calibrated.values()), axis=0)
    ensemble = softmax(np.log(mean) / temperatures["ensemble"], axis=1)  # as the graph fuses
    gradings = [SimpleNamespace(ensemble_probabilities=ensemble[i],
                                head_probabilities={h: p[i] for h, p in calibrated.items()})
                for i in range(40)]
    labels = rng.integers(0, 5, size=40)
    ece = calibration_change(gradings, labels, temperatures, fusion="mean")
    raw_mean = np.mean([softmax(z, axis=1) for z in logits.values()], axis=0)
    assert ece["ensemble"]["before"] == pytest.approx(_ece(raw_mean, labels), abs=1e-9)
    assert ece["ensemble"]["after"] == pytest.approx(_ece(ensemble, labels), abs=1e-9)
    for head, z in logits.items():
        assert ece[head]["before"] == pytest.approx(_ece(softmax(z, axis=1), labels), abs=1e-9)
    gated = calibration_change(gradings, labels, temperatures, fusion="gated")
    assert gated["ensemble"]["before"] == pytest.approx(_ece(mean, labels), abs=1e-9)
