"""Contenders by name: each builds a scikit-learn estimator for one trial (a registry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from qsight_pipeline.config.quantum_study import QuantumStudyParams
from qsight_pipeline.config.types import NO_ENTANGLEMENT
from qsight_pipeline.constants import NUM_GRADES
from qsight_pipeline.models.estimators import (
    ClassicalTwinClassifier,
    HeadBClassifier,
    QuantumHeadClassifier,
)
from qsight_pipeline.study.grid import Trial

Builder = Callable[[Trial, QuantumStudyParams, dict[str, Any]], BaseEstimator]
CONTENDER_BUILDERS: dict[str, Builder] = {}
GRADES = tuple(range(NUM_GRADES))


def register_contender(name: str) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        CONTENDER_BUILDERS[name] = builder
        return builder

    return register


def build_estimator(trial: Trial, params: QuantumStudyParams,
                    head_settings: dict[str, Any]) -> BaseEstimator:
    """The unfitted estimator of a trial; an unknown contender names the known ones."""
    if trial.contender not in CONTENDER_BUILDERS:
        raise ValueError(f"Unknown study contender {trial.contender!r}; known: "
                         f"{', '.join(sorted(CONTENDER_BUILDERS))}")
    return CONTENDER_BUILDERS[trial.contender](trial, params, head_settings)


def _recipe(trial: Trial, params: QuantumStudyParams) -> dict[str, Any]:
    # The recipe every torch contender shares; only the head differs.
    return {"learning_rate": trial.value, "epochs": params.epochs,
            "batch_size": params.batch_size, "weight_decay": params.weight_decay,
            "standardize": True, "class_balanced": True, "classes": GRADES,
            "random_state": trial.seed}


@register_contender("quantum")
def _quantum(trial: Trial, params: QuantumStudyParams, head: dict[str, Any]) -> BaseEstimator:
    return QuantumHeadClassifier(n_qubits=trial.n_qubits, reps=trial.reps,
                                 encoding=trial.encoding, entanglement=trial.entanglement,
                                 **_recipe(trial, params))


@register_contender("frozen_circuit")
def _frozen(trial: Trial, params: QuantumStudyParams, head: dict[str, Any]) -> BaseEstimator:
    return _quantum(trial, params, head).set_params(freeze_circuit=True)


@register_contender("no_entanglement")
def _no_entanglement(trial: Trial, params: QuantumStudyParams,
                     head: dict[str, Any]) -> BaseEstimator:
    # The quantum head's circuit through the same builder with no entangling pairs: the same
    # rotations, width and weights, a product state; trained exactly like the quantum head.
    return QuantumHeadClassifier(n_qubits=trial.n_qubits, reps=trial.reps,
                                 encoding=trial.encoding, entanglement=NO_ENTANGLEMENT,
                                 **_recipe(trial, params))


@register_contender("classical_twin")
def _twin(trial: Trial, params: QuantumStudyParams, head: dict[str, Any]) -> BaseEstimator:
    return ClassicalTwinClassifier(n_qubits=trial.n_qubits, reps=trial.reps,
                                   **_recipe(trial, params))


@register_contender("head_b")
def _head_b(trial: Trial, params: QuantumStudyParams, head: dict[str, Any]) -> BaseEstimator:
    return HeadBClassifier(hidden_dim=head.get("head_hidden_dim", 128),
                           dropout=head.get("dropout", 0.1), **_recipe(trial, params))


@register_contender("logistic")
def _logistic(trial: Trial, params: QuantumStudyParams, head: dict[str, Any]) -> BaseEstimator:
    # lbfgs fits the multinomial model; "balanced" is the trainer's inverse-frequency rule.
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=trial.value, class_weight="balanced", max_iter=2000,
                           random_state=trial.seed),
    )
