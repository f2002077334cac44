"""The study's trials: one per training share x contender x setting x hyperparameter value x seed."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

from qsight_pipeline.config.quantum_study import QuantumStudyParams

# Contenders whose circuit settings matter, and which of the four each one uses.
SETTING_KEYS = ("n_qubits", "reps", "encoding", "entanglement")
USES_SETTINGS: dict[str, tuple[str, ...]] = {
    "quantum": SETTING_KEYS,
    "frozen_circuit": SETTING_KEYS,
    # The same circuit without entangling gates: its entanglement is always none.
    "no_entanglement": ("n_qubits", "reps", "encoding"),
    # The twin has no encoding circuit and no entangling gates: only width and depth carry over.
    "classical_twin": ("n_qubits", "reps"),
    "head_b": (),
    "logistic": (),
}


@dataclass(frozen=True)
class Trial:
    """One training run. Settings a contender does not use are ``None``."""

    contender: str
    n_qubits: int | None
    reps: int | None
    encoding: str | None
    entanglement: str | None
    hyperparameter: str
    value: float
    seed: int
    train_fraction: float = 1.0

    def setting(self) -> tuple:
        """The contender and its settings: trials that differ only in value and seed share it."""
        return (self.contender, self.n_qubits, self.reps, self.encoding, self.entanglement,
                self.train_fraction)

    def to_dict(self) -> dict:
        return asdict(self)


def seeds(params: QuantumStudyParams) -> list[int]:
    return list(range(params.first_seed, params.first_seed + params.seeds))


def contender_settings(params: QuantumStudyParams, contender: str) -> list[dict]:
    """The distinct settings of one contender (a single empty setting for the baselines)."""
    used = USES_SETTINGS[contender]
    grid = {key: getattr(params, key) if key in used else [None] for key in SETTING_KEYS}
    return [dict(zip(SETTING_KEYS, combo, strict=True))
            for combo in itertools.product(*(grid[key] for key in SETTING_KEYS))]


def hyperparameter_grid(params: QuantumStudyParams, contender: str) -> tuple[str, list[float]]:
    """What is searched on validation: the learning rate, or ``C`` for the logistic regression."""
    if contender == "logistic":
        return "C", list(params.logistic_c)
    return "learning_rate", list(params.learning_rates)


def expand_grid(params: QuantumStudyParams) -> list[Trial]:
    """Every trial of the study, in a fixed order (the largest training share first)."""
    trials = []
    for fraction in sorted(params.train_fractions, reverse=True):
        for contender in params.contenders:
            name, values = hyperparameter_grid(params, contender)
            for setting in contender_settings(params, contender):
                for value in values:
                    trials += [Trial(contender, **setting, hyperparameter=name,
                                     value=float(value), seed=seed,
                                     train_fraction=float(fraction))
                               for seed in seeds(params)]
    return trials
