"""``quantum_study``: the grid, search and seeds of the quantum-vs-classical study.

The defaults here are the one source of them; ``conf/base/parameters_quantum_study.yml`` repeats
them for users to read and edit (a test keeps the two equal).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from qsight_pipeline.config.base import ParamsBlock

# Kept here (not imported from models.quantum) so that this package needs only pydantic.
STUDY_ENCODINGS = ("angle", "zz")
STUDY_ENTANGLEMENTS = ("linear", "reverse_linear", "circular", "full")
CONTENDERS = ("quantum", "classical_twin", "head_b", "logistic", "frozen_circuit")
MAX_STUDY_QUBITS = 12
# Inclusive bounds of the scalar settings. Two seeds at least: an interval needs a spread.
RANGES: dict[str, tuple[float, float]] = {
    "seeds": (2, 100), "first_seed": (0, 2**31 - 1), "epochs": (1, 10_000),
    "batch_size": (1, 65_536), "weight_decay": (0.0, 1.0), "confidence": (0.5, 0.999),
}


def _unique(values: list, key: str) -> list:
    if not values:
        raise ValueError(f"quantum_study.{key} must list at least one value")
    if len(set(values)) != len(values):
        raise ValueError(f"quantum_study.{key} lists a value twice: {values}")
    return values


class StudyHardwareParams(ParamsBlock):
    """The study under device noise: the chosen quantum settings, trained exactly, then scored on
    the test split through a device snapshot (``quantum_hardware``'s code path) at ``shots``."""

    device: str
    shots: int = Field(1024, ge=1, le=1_000_000)
    mitigation: Literal["none", "readout", "zne", "readout_zne"] = "readout"
    noise_scale: float = Field(1.0, ge=0.0, le=10.0)
    optimization_level: int = Field(3, ge=0, le=3)
    seed_transpiler: int = Field(7, ge=0)

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("quantum_study.hardware.device must name a device snapshot, e.g. "
                             "fake_torino")
        return value


class QuantumStudyParams(ParamsBlock):
    """The study's grid (one quantum head per combination) and its shared training recipe.

    Every contender trains with the same epochs, batch size, AdamW weight decay, learning-rate grid
    and seeds on the same standardised features; the logistic regression has no learning rate and
    searches its inverse regularisation ``logistic_c`` instead, over as many values.
    """

    n_qubits: list[int] = [2, 4, 6, 8]
    reps: list[int] = [1, 2]
    encoding: list[str] = ["angle", "zz"]
    entanglement: list[str] = ["linear"]
    learning_rates: list[float] = [3e-4, 3e-3, 3e-2]
    logistic_c: list[float] = [0.1, 1.0, 10.0]
    seeds: int = 5
    first_seed: int = 0
    epochs: int = 40
    batch_size: int = 32
    weight_decay: float = 0.01
    contenders: list[str] = list(CONTENDERS)
    confidence: float = 0.95
    n_jobs: int = -1
    # Few training data: every contender is trained on each share of the training split (nested,
    # stratified subsets drawn once with train_subset_seed); validation and test stay whole.
    train_fractions: list[float] = [0.05, 0.1, 0.25, 0.5, 1.0]
    train_subset_seed: int = Field(0, ge=0, le=2**31 - 1)
    # Noise: off by default; a device snapshot and a shot count score the chosen quantum settings.
    hardware: StudyHardwareParams | None = None

    @field_validator(*RANGES)
    @classmethod
    def _check_range(cls, value: float, info) -> float:
        low, high = RANGES[info.field_name]
        if not low <= value <= high:
            raise ValueError(
                f"quantum_study.{info.field_name} must be between {low} and {high}, got {value}"
            )
        return value

    @field_validator("n_qubits")
    @classmethod
    def _check_qubits(cls, values: list[int]) -> list[int]:
        bad = [v for v in values if not 1 <= v <= MAX_STUDY_QUBITS]
        if bad:
            raise ValueError(
                f"quantum_study.n_qubits must be between 1 and {MAX_STUDY_QUBITS}, got {bad}"
            )
        return _unique(values, "n_qubits")

    @field_validator("reps")
    @classmethod
    def _check_reps(cls, values: list[int]) -> list[int]:
        bad = [v for v in values if not 1 <= v <= 20]
        if bad:
            raise ValueError(f"quantum_study.reps must be between 1 and 20, got {bad}")
        return _unique(values, "reps")

    @field_validator("encoding", "entanglement", "contenders")
    @classmethod
    def _check_names(cls, values: list[str], info) -> list[str]:
        allowed = {
            "encoding": STUDY_ENCODINGS,
            "entanglement": STUDY_ENTANGLEMENTS,
            "contenders": CONTENDERS,
        }[info.field_name]
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValueError(
                f"quantum_study.{info.field_name} must be among {', '.join(allowed)}, got {bad}"
            )
        return _unique(values, info.field_name)

    @field_validator("learning_rates", "logistic_c")
    @classmethod
    def _check_positive(cls, values: list[float], info) -> list[float]:
        bad = [v for v in values if not 0 < v <= 1e4]
        if bad:
            raise ValueError(
                f"quantum_study.{info.field_name} must hold positive numbers, got {bad}"
            )
        return _unique(values, info.field_name)

    @field_validator("train_fractions")
    @classmethod
    def _check_fractions(cls, values: list[float]) -> list[float]:
        bad = [v for v in values if not 0 < v <= 1]
        if bad:
            raise ValueError(
                f"quantum_study.train_fractions must hold shares of the training split in (0, 1], "
                f"got {bad}"
            )
        return sorted(_unique(values, "train_fractions"))

    @field_validator("n_jobs")
    @classmethod
    def _check_jobs(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError(
                f"quantum_study.n_jobs must be -1 (every core) or a positive number, got {value}"
            )
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> QuantumStudyParams:
        if "zz" in self.encoding and min(self.n_qubits) < 2:
            raise ValueError(
                "quantum_study.n_qubits must be at least 2 when quantum_study.encoding lists "
                f"'zz', got {min(self.n_qubits)}"
            )
        if "classical_twin" in self.contenders and max(self.reps) > min(self.n_qubits):
            # The twin's layer holds n_qubits*(reps+1) weights in an n x n matrix and a bias.
            raise ValueError(
                f"quantum_study.reps must not exceed the smallest n_qubits ({min(self.n_qubits)}) "
                f"when the classical_twin is a contender, got {max(self.reps)}"
            )
        return self
