"""``quantum_hardware``: the trained quantum head under device noise, shots and mitigation.

The defaults here are the one source of them; ``conf/base/parameters_quantum_hardware.yml``
repeats them for users to read and edit (a test keeps the two equal). Device names are checked
against ``qiskit_ibm_runtime.fake_provider`` before the run (``run_checks.py``), not here: this
package imports only pydantic.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from qsight_pipeline.config.base import ParamsBlock
from qsight_pipeline.config.types import MITIGATIONS, Mitigation, distinct

Extrapolation = Literal["richardson", "linear"]
EXTRAPOLATIONS: tuple[str, ...] = get_args(Extrapolation)
__all__ = ["EXTRAPOLATIONS", "MITIGATIONS", "QuantumHardwareParams"]

# A snapshot's name, e.g. fake_torino; whether the snapshot exists is checked before the run.
DeviceName = Annotated[str, Field(min_length=1)]


class ZneParams(ParamsBlock):
    """Zero-noise extrapolation: two-qubit gates folded ``G (G G)^k`` to scale factor ``2k+1``."""

    scale_factors: distinct(Annotated[int, Field(ge=1, le=21)]) = [1, 3, 5]
    extrapolation: Extrapolation = "richardson"

    @field_validator("scale_factors")
    @classmethod
    def _odd(cls, values: list[int]) -> list[int]:
        even = [v for v in values if v % 2 == 0]
        if even:
            raise ValueError(f"must be odd (gate folding scales the noise by 1, 3, 5, ...), got {even}")
        if len(values) < 2 or 1 not in values:
            raise ValueError(f"must hold 1 and at least one larger factor, got {values}")
        return sorted(values)


class IbmRuntimeParams(ParamsBlock):
    """A real IBM Quantum device, reached with the user's own saved account (never conf/base).

    ``backend: null`` (the default) runs nothing on hardware. With a device name the same
    evaluation runs through ``QiskitRuntimeService`` in a ``Batch``; the job ids are written to
    ``quantum_hardware_jobs.json`` and a later run with ``resume: true`` collects them.
    """

    backend: str | None = None
    instance: str | None = None
    channel: str | None = None
    resume: bool = True
    shots: int = Field(1024, ge=1, le=1_000_000)
    mitigation: Mitigation = "readout"
    max_images: int | None = Field(None, ge=1)


class QuantumHardwareParams(ParamsBlock):
    """Which conditions the trained quantum head is evaluated under.

    Conditions: ``exact`` (the torch executor, the reference); ideal sampling at each of
    ``shots``; and for each device snapshot in ``devices``, each shot count and each
    ``mitigation``, the transpiled circuit under the snapshot's noise. Sampled conditions repeat
    over ``seeds`` sampling seeds (``first_seed`` ...).
    """

    # Heron r1 (133 qubits), r2 and r3 (156 each); fake_aachen: the newest Heron in runtime 0.51.
    devices: distinct(DeviceName) = ["fake_torino", "fake_fez", "fake_aachen"]
    shots: distinct(Annotated[int, Field(ge=1, le=1_000_000)]) = [256, 1024, 4096]
    mitigation: distinct(Mitigation) = list(MITIGATIONS)
    ideal_shots: bool = True
    seeds: int = Field(3, ge=1, le=100)
    first_seed: int = Field(0, ge=0, le=2**31 - 1000)
    split: Literal["val", "test"] = "test"
    max_images: int | None = Field(None, ge=1)
    noise_scale: float = Field(1.0, ge=0.0, le=10.0)
    optimization_level: int = Field(3, ge=0, le=3)
    seed_transpiler: int = Field(7, ge=0)
    overhead_seconds_per_circuit: float = Field(0.002, ge=0.0, le=60.0)
    overhead_seconds_per_job: float = Field(2.0, ge=0.0, le=3600.0)
    headline_device: str | None = None
    headline_shots: int = Field(1024, ge=1)
    headline_mitigation: Mitigation = "readout_zne"
    zne: ZneParams = Field(default_factory=ZneParams)
    ibm_runtime: IbmRuntimeParams = Field(default_factory=IbmRuntimeParams)

    @model_validator(mode="after")
    def _check_headline(self) -> QuantumHardwareParams:
        if self.headline_device is not None and self.headline_device not in self.devices:
            raise ValueError(
                f"quantum_hardware.headline_device must be one of quantum_hardware.devices "
                f"({', '.join(self.devices) or 'none listed'}), got {self.headline_device!r}"
            )
        return self
