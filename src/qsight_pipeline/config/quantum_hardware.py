"""``quantum_hardware``: the trained quantum head under device noise, shots and mitigation.

The defaults here are the one source of them; ``conf/base/parameters_quantum_hardware.yml``
repeats them for users to read and edit (a test keeps the two equal). Device names are checked
against ``qiskit_ibm_runtime.fake_provider`` before the run (``run_checks.py``), not here: this
package imports only pydantic.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from qsight_pipeline.config.base import ParamsBlock

MITIGATIONS: tuple[str, ...] = ("none", "readout", "zne", "readout_zne")
EXTRAPOLATIONS: tuple[str, ...] = ("richardson", "linear")


def _unique(values: list, key: str) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"quantum_hardware.{key} lists a value twice: {values}")
    return values


class ZneParams(ParamsBlock):
    """Zero-noise extrapolation: two-qubit gates folded ``G (G G)^k`` to scale factor ``2k+1``."""

    scale_factors: list[int] = [1, 3, 5]
    extrapolation: Literal["richardson", "linear"] = "richardson"

    @field_validator("scale_factors")
    @classmethod
    def _odd(cls, values: list[int]) -> list[int]:
        bad = [v for v in values if v < 1 or v % 2 == 0 or v > 21]
        if bad:
            raise ValueError(
                f"quantum_hardware.zne.scale_factors must be odd integers from 1 to 21 (gate "
                f"folding), got {bad}"
            )
        if len(values) < 2 or 1 not in values:
            raise ValueError(
                "quantum_hardware.zne.scale_factors must hold 1 and at least one larger factor, "
                f"got {values}"
            )
        return sorted(_unique(values, "zne.scale_factors"))


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
    mitigation: Literal["none", "readout", "zne", "readout_zne"] = "readout"
    max_images: int | None = Field(None, ge=1)


class QuantumHardwareParams(ParamsBlock):
    """Which conditions the trained quantum head is evaluated under.

    Conditions: ``exact`` (the torch executor, the reference); ideal sampling at each of
    ``shots``; and for each device snapshot in ``devices``, each shot count and each
    ``mitigation``, the transpiled circuit under the snapshot's noise. Sampled conditions repeat
    over ``seeds`` sampling seeds (``first_seed`` ...).
    """

    devices: list[str] = ["fake_torino", "fake_fez"]
    shots: list[int] = [256, 1024, 4096]
    mitigation: list[str] = list(MITIGATIONS)
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
    headline_mitigation: Literal["none", "readout", "zne", "readout_zne"] = "readout_zne"
    zne: ZneParams = Field(default_factory=ZneParams)
    ibm_runtime: IbmRuntimeParams = Field(default_factory=IbmRuntimeParams)

    @field_validator("devices")
    @classmethod
    def _check_devices(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if not v or not isinstance(v, str)]
        if bad:
            raise ValueError(f"quantum_hardware.devices must hold snapshot names, got {bad}")
        return _unique(values, "devices")

    @field_validator("shots")
    @classmethod
    def _check_shots(cls, values: list[int]) -> list[int]:
        bad = [v for v in values if not 1 <= v <= 1_000_000]
        if bad:
            raise ValueError(
                f"quantum_hardware.shots must hold shot counts from 1 to 1000000, got {bad}"
            )
        if not values:
            raise ValueError("quantum_hardware.shots must list at least one shot count")
        return _unique(values, "shots")

    @field_validator("mitigation")
    @classmethod
    def _check_mitigation(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if v not in MITIGATIONS]
        if bad:
            raise ValueError(
                f"quantum_hardware.mitigation must be among {', '.join(MITIGATIONS)}, got {bad}"
            )
        if not values:
            raise ValueError("quantum_hardware.mitigation must list at least one (e.g. none)")
        return _unique(values, "mitigation")

    @model_validator(mode="after")
    def _check_headline(self) -> QuantumHardwareParams:
        if self.headline_device is not None and self.headline_device not in self.devices:
            raise ValueError(
                f"quantum_hardware.headline_device must be one of quantum_hardware.devices "
                f"({', '.join(self.devices) or 'none listed'}), got {self.headline_device!r}"
            )
        return self
