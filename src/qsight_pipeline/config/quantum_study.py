"""``quantum_study``: the grid, search and seeds of the quantum-vs-classical study.

The defaults here are the one source of them; ``conf/base/parameters_quantum_study.yml`` repeats
them for users to read and edit (a test keeps the two equal).
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from qsight_pipeline.config.base import ParamsBlock
from qsight_pipeline.config.types import (
    NO_ENTANGLEMENT,
    Encoding,
    Entanglement,
    Mitigation,
    distinct,
)

Contender = Literal["quantum", "classical_twin", "head_b", "logistic", "frozen_circuit",
                    "no_entanglement"]
CONTENDERS: tuple[str, ...] = get_args(Contender)
# Where the trials run: joblib's loky processes on this machine, or a Dask or Ray cluster.
Backend = Literal["loky", "dask", "ray"]
BACKENDS: tuple[str, ...] = get_args(Backend)
MAX_STUDY_QUBITS = 12

# The grid's axes: non-empty lists without repeats, each value in its range.
QubitCounts = distinct(Annotated[int, Field(ge=1, le=MAX_STUDY_QUBITS)])
RepCounts = distinct(Annotated[int, Field(ge=1, le=20)])
PositiveValues = distinct(Annotated[float, Field(gt=0, le=1e4)])
TrainingShares = distinct(Annotated[float, Field(gt=0, le=1)])


class StudyHardwareParams(ParamsBlock):
    """The study under device noise: the chosen quantum settings, trained exactly, then scored on
    the test split through a device snapshot (``quantum_hardware``'s code path) at ``shots``."""

    device: str
    shots: int = Field(1024, ge=1, le=1_000_000)
    mitigation: Mitigation = "readout"
    noise_scale: float = Field(1.0, ge=0.0, le=10.0)
    optimization_level: int = Field(3, ge=0, le=3)
    seed_transpiler: int = Field(7, ge=0)

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a device snapshot, e.g. fake_torino")
        return value


class QuantumStudyParams(ParamsBlock):
    """The study's grid (one quantum head per combination) and its shared training recipe.

    Every contender trains with the same epochs, batch size, AdamW weight decay, learning-rate grid
    and seeds on the same standardised features; the logistic regression has no learning rate and
    searches its inverse regularisation ``logistic_c`` instead, over as many values.
    """

    n_qubits: QubitCounts = [2, 4, 6, 8]
    reps: RepCounts = [1, 2]
    encoding: distinct(Encoding) = ["angle", "zz"]
    entanglement: distinct(Entanglement) = ["linear"]
    learning_rates: PositiveValues = [3e-4, 3e-3, 3e-2]
    logistic_c: PositiveValues = [0.1, 1.0, 10.0]
    # Two seeds at least: an interval needs a spread.
    seeds: int = Field(5, ge=2, le=100)
    first_seed: int = Field(0, ge=0, le=2**31 - 1)
    epochs: int = Field(40, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=65_536)
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    contenders: distinct(Contender) = list(CONTENDERS)
    confidence: float = Field(0.95, ge=0.5, le=0.999)
    n_jobs: int = -1
    # Trials on a cluster through joblib's backends; cluster_address empty = a local cluster.
    backend: Backend = "loky"
    cluster_address: str | None = None
    # Few training data: every contender is trained on each share of the training split (nested,
    # stratified subsets drawn once with train_subset_seed); validation and test stay whole.
    train_fractions: TrainingShares = [0.05, 0.1, 0.25, 0.5, 1.0]
    train_subset_seed: int = Field(0, ge=0, le=2**31 - 1)
    # Noise: off by default; a device snapshot and a shot count score the chosen quantum settings.
    hardware: StudyHardwareParams | None = None

    @field_validator("train_fractions")
    @classmethod
    def _smallest_first(cls, values: list[float]) -> list[float]:
        return sorted(values)

    @field_validator("cluster_address")
    @classmethod
    def _empty_is_local(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("n_jobs")
    @classmethod
    def _check_jobs(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("must be -1 (every core) or a positive number")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> QuantumStudyParams:
        if "zz" in self.encoding and min(self.n_qubits) < 2:
            raise ValueError(
                "quantum_study.n_qubits must be at least 2 when quantum_study.encoding lists "
                f"'zz', got {min(self.n_qubits)}"
            )
        if NO_ENTANGLEMENT in self.entanglement:
            raise ValueError(
                "quantum_study.entanglement lists 'none': the product-state circuit is the "
                "no_entanglement contender; list it in quantum_study.contenders instead"
            )
        if self.cluster_address and self.backend == "loky":
            raise ValueError(
                "quantum_study.cluster_address is set but quantum_study.backend is loky (this "
                "machine); set backend to dask or ray, or clear cluster_address"
            )
        if "classical_twin" in self.contenders and max(self.reps) > min(self.n_qubits):
            # The twin's layer holds n_qubits*(reps+1) weights in an n x n matrix and a bias.
            raise ValueError(
                f"quantum_study.reps must not exceed the smallest n_qubits ({min(self.n_qubits)}) "
                f"when the classical_twin is a contender, got {max(self.reps)}"
            )
        return self
