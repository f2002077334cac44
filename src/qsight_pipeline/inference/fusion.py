"""How the heads are fused: the learned gate, or the mean of the heads' calibrated probabilities.

The gate earns its place the way the quantum head does in the study: on validation, against two
baselines, with intervals over seeds (``study.statistics``). Each seed fits the gate afresh through
the schedule's ensemble stage on the frozen heads (the first seed is the model's own gate); the
baselines, the mean of the heads' calibrated probabilities and the best single head, do not depend
on the gate's seed. With ``ensemble.fusion: auto`` the model keeps the gate only when the paired
QWK difference against the mean lies above 0, and fuses by the mean otherwise.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from qsight_pipeline.config.ensemble import EnsembleParams
from qsight_pipeline.constants import ENSEMBLE, HEADS
from qsight_pipeline.inference import calibration as cal
from qsight_pipeline.models.fusion_rules import GATED, MEAN
from qsight_pipeline.models.hybrid import HybridModel
from qsight_pipeline.study.statistics import BETTER, paired_difference, t_interval
from qsight_pipeline.training import workflow
from qsight_pipeline.training.metrics import grading_metrics, quadratic_weighted_kappa
from qsight_pipeline.training.stages import Stage
from qsight_pipeline.training.trainer import TrainerSettings, seed_everything

logger = logging.getLogger(__name__)

HEAD_NAMES = {"head_a": "head A", "head_b": "head B", "quantum_head": "the quantum head"}
WEIGHT_BINS = 20


def active_heads(split_result: Mapping[str, Any]) -> list[str]:
    """The heads whose logits the trainer's evaluation kept, in ``HEADS`` order."""
    return [head for head in HEADS if f"logits_{head}" in split_result["outputs"]]


def head_temperatures(val_result: Mapping[str, Any]) -> dict[str, float]:
    """Each active head's temperature on validation (as ``calibration.fit_temperatures``)."""
    outputs, labels = val_result["outputs"], val_result["labels"]
    return {h: cal.fit_temperature(outputs[f"logits_{h}"], labels) for h in active_heads(val_result)}


def mean_of_heads(split_result: Mapping[str, Any], temperatures: Mapping[str, float]) -> np.ndarray:
    """The mean of the active heads' calibrated probabilities, ``(n, 5)``."""
    outputs = split_result["outputs"]
    return np.mean([cal.calibrated_probs(outputs[f"logits_{h}"], temperatures[h])
                    for h in active_heads(split_result)], axis=0)


def with_fusion(
    split_result: Mapping[str, Any], rule: str, temperatures: Mapping[str, float]
) -> dict[str, Any]:
    """The trainer's evaluation of a split with its ``ensemble`` made by ``rule`` (``gated``: as
    the model's gate fused it; ``mean``: the mean of the heads' calibrated probabilities)."""
    if rule == GATED:
        return dict(split_result)
    probs = mean_of_heads(split_result, temperatures)
    return {
        **split_result,
        "probabilities": {**split_result["probabilities"], ENSEMBLE: probs},
        "metrics": {**split_result["metrics"], ENSEMBLE: grading_metrics(split_result["labels"], probs)},
    }


def _qwk(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(quadratic_weighted_kappa(labels, np.asarray(probs).argmax(axis=1)))


def gate_weight_distribution(split_result: Mapping[str, Any]) -> dict[str, Any]:
    """How the gate weighs each active head over a split's photographs: a histogram (``bins``
    edges, ``counts`` per head), the mean and the 5th/50th/95th percentiles per head, and the
    share of photographs on which one head gets more than 0.99 (``saturated``)."""
    weights = np.asarray(split_result["outputs"]["head_weights"], dtype=np.float64)
    heads = active_heads(split_result)
    edges = np.linspace(0.0, 1.0, WEIGHT_BINS + 1)
    columns = {h: weights[:, HEADS.index(h)] for h in heads}
    return {
        "images": int(len(weights)),
        "bins": edges.tolist(),
        "counts": {h: np.histogram(w, edges)[0].tolist() for h, w in columns.items()},
        "mean": {h: float(w.mean()) for h, w in columns.items()} if len(weights) else {},
        "percentiles": {h: dict(zip(("p5", "p50", "p95"), np.percentile(w, [5, 50, 95]).tolist(),
                                    strict=True)) for h, w in columns.items()} if len(weights) else {},
        "saturated": float((weights.max(axis=1) > 0.99).mean()) if len(weights) else None,
    }


def refit_gate(
    model: HybridModel, cache: dict[str, Any], stages: Sequence[Stage], settings: TrainerSettings,
    seed: int, splits: Sequence[str] = ("val", "test"),
) -> dict[str, Any]:
    """A copy of ``model`` whose gate is fitted afresh with ``seed`` through the ensemble
    ``stages``, evaluated on ``splits`` (no stage checkpoints: they belong to the model's run)."""
    twin = copy.deepcopy(model)
    run = settings.model_copy(update={"seed": seed, "checkpoint_dir": None, "epoch_callback": None})
    seed_everything(seed)
    _, evaluation = workflow.fit_on_cache(twin, "ensemble", stages, cache, run, splits=splits)
    return evaluation


def compare_fusions(
    model: HybridModel,
    cache: dict[str, Any],
    stages: Sequence[Stage],
    settings: TrainerSettings,
    params: EnsembleParams,
    evaluation: Mapping[str, Any],
) -> dict[str, Any]:
    """The gated ensemble against the mean of the heads' calibrated probabilities and the best
    single head, on validation (test quoted beside), and the fusion the model keeps.

    Args:
        model, cache, stages, settings: the model after the ensemble stage, the feature cache,
            the schedule's ensemble stages and the run's settings (to fit the gate again).
        params: the ``ensemble`` block.
        evaluation: the trainer's evaluation of val and test with the model's own gate.

    Returns:
        ``training_summary["ensemble"]``: ``rule`` (``gated`` or ``mean``), ``setting``,
        ``seeds``, QWK per contender on ``validation`` and ``test`` (the gate's as t-intervals
        over seeds), the paired differences ``gate_vs_mean`` and ``gate_vs_best_head``, the
        ``winner`` on validation (None when the gate leads by a margin its interval does not
        show), the ``head_temperatures`` and one ``sentence``.
    """
    val = evaluation["val"]
    heads = active_heads(val)
    if len(heads) < 2:
        return {"rule": GATED, "setting": params.fusion, "winner": GATED,
                "sentence": f"Only {HEAD_NAMES[heads[0]]} is active: there is nothing to fuse."}
    seeds = [settings.seed + i for i in range(params.seeds if stages else 1)]
    by_seed = {seeds[0]: evaluation}
    for index, seed in enumerate(seeds[1:], start=2):
        logger.info("Fitting the gate again with seed %d (%d of %d) to compare it with the mean "
                    "of the heads", seed, index, len(seeds))
        by_seed[seed] = refit_gate(model, cache, stages, settings, seed, tuple(evaluation))
    temperatures = head_temperatures(val)
    record = {"setting": params.fusion, "seeds": seeds, "confidence": params.confidence,
              "head_temperatures": temperatures,
              **_contenders(by_seed, evaluation, temperatures, params.confidence)}
    gate_vs_mean = record["gate_vs_mean"]
    record["rule"] = (params.fusion if params.fusion != "auto"
                      else GATED if gate_vs_mean["verdict"] == BETTER else MEAN)
    record["sentence"] = fusion_sentence(record)
    logger.info("%s", record["sentence"])
    return _finite(record)


def _finite(value: Any) -> Any:
    """``value`` with NaN (the spread of a single seed) as None: JSON has no NaN."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _contenders(
    by_seed: Mapping[int, Mapping[str, Any]], evaluation: Mapping[str, Any],
    temperatures: Mapping[str, float], confidence: float,
) -> dict[str, Any]:
    """Each contender's QWK per split, the best head (on validation) and the paired differences."""
    qwk: dict[str, dict[str, Any]] = {}
    gated: dict[str, dict[int, float]] = {}
    for split in [s for s in ("val", "test") if s in evaluation]:
        result, labels = evaluation[split], evaluation[split]["labels"]
        gated[split] = {seed: _qwk(labels, ev[split]["probabilities"][ENSEMBLE])
                        for seed, ev in by_seed.items()}
        qwk[split] = {
            GATED: t_interval(list(gated[split].values()), confidence),
            MEAN: _qwk(labels, mean_of_heads(result, temperatures)),
            "heads": {h: _qwk(labels, result["outputs"][f"logits_{h}"]) for h in active_heads(result)},
        }
    best = max(qwk["val"]["heads"], key=lambda h: qwk["val"]["heads"][h])  # ties: HEADS order
    for split in qwk:
        qwk[split]["best_head"] = qwk[split]["heads"][best]
    constant = {split: {MEAN: dict.fromkeys(gated[split], qwk[split][MEAN]),
                        "best_head": dict.fromkeys(gated[split], qwk[split]["best_head"])}
                for split in qwk}
    val_scores = {GATED: qwk["val"][GATED]["mean"], MEAN: qwk["val"][MEAN],
                  "best_head": qwk["val"]["best_head"]}
    gate_vs_mean = paired_difference(gated["val"], constant["val"][MEAN], confidence)
    # The simpler contender wins a tie; the gate wins only by a margin its interval shows (else
    # no one: ``winner`` is None).
    top = max((MEAN, "best_head", GATED), key=lambda name: val_scores[name])
    return {
        "validation": qwk["val"], "test": qwk.get("test"), "best_head": best,
        "gate_vs_mean": gate_vs_mean,
        "gate_vs_best_head": paired_difference(gated["val"], constant["val"]["best_head"], confidence),
        "winner": None if top == GATED and gate_vs_mean["verdict"] != BETTER else top,
    }


def fusion_sentence(record: Mapping[str, Any]) -> str:
    """Which contender wins on validation and which fusion the model keeps, in one sentence."""
    val, seeds = record["validation"], len(record["seeds"])
    gate = val[GATED]
    names = {GATED: "the gated ensemble", MEAN: "the mean of the heads' calibrated probabilities",
             "best_head": f"the best single head ({HEAD_NAMES[record['best_head']]})"}
    spread = f" [{gate['low']:.3f}, {gate['high']:.3f}] over {seeds} seeds" if seeds > 1 else " (one seed)"
    scores = {GATED: f"{gate['mean']:.3f}{spread}",
              MEAN: f"{val[MEAN]:.3f}", "best_head": f"{val['best_head']:.3f}"}
    winner = record["winner"]
    first = winner or GATED
    others = " and ".join(f"{scores[o]} for {names[o]}" for o in names if o != first)
    verb = "leads" if winner is None else "wins"
    head = f"On validation {names[first]} {verb} with QWK {scores[first]}, against {others}"
    difference = record["gate_vs_mean"]
    gap = f"{difference['mean']:+.3f}" + (
        f" [{difference['low']:+.3f}, {difference['high']:+.3f}]" if seeds > 1 else "")
    keeps = "keeps the gate" if record["rule"] == GATED else "fuses its heads by the mean"
    if record["setting"] != "auto":
        return f"{head}; ensemble.fusion is set to {record['rule']}, so the model {keeps}."
    if record["rule"] == GATED:
        return f"{head}; the gate beats the mean by {gap} QWK, so the model {keeps}."
    if winner is None:
        return (f"{head}, but not detectably ({gap} QWK over the mean), so the model fuses its "
                "heads by the simpler mean.")
    return f"{head}; the gate does not beat the mean ({gap} QWK), so the model {keeps}."
