"""Run-wide settings: the ``run`` block of ``parameters.yml`` (key names kept from the old CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from qsight_pipeline.config.base import ParamsBlock
from qsight_pipeline.config.devices import parse_device, parse_device_ids
from qsight_pipeline.errors import ParameterError


class RunSettings(ParamsBlock):
    """The ``run`` block: the old CLI's run-wide flags. Defaults are the bundled demo's
    (``conf/base``). ``image_size`` null is the encoder's own input size (timm's data config for
    its weights), as in the Python API and the encoder factory."""

    image_size: int | None = Field(None, ge=16, le=4096)
    seed: int = 42
    # auto | cpu | mps | cuda | cuda:<index>; without the hardware a logged fallback to CPU.
    device: str = "auto"
    multi_gpu: bool = False
    # GPU indices: [0, 1], 1, or "0,1" / "0 1" (Kedro splits --params on commas).
    device_ids: list[int] | str | int | None = None
    mixed_precision: bool | None = None
    grad_clip: float = Field(1.0, ge=0)
    latency_tracking: bool = True
    batch_size: int = Field(16, ge=1)
    # auto: min(8, CPUs - 1) loader processes on CUDA, 0 on a CPU (data.loaders).
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    class_balanced_loss: bool = True
    # GPU speed-ups; nothing changes on a CPU. channels_last null = on exactly when on CUDA.
    channels_last: bool | None = None
    compile: bool = False
    checkpoint_dir: str | Path | None = None
    resume: bool = True
    output_dir: str = "data/06_models/trained_model"
    # The raw schedule: validated and parsed into Stage objects by ``training.stages``.
    stages: list[dict[str, Any]] | dict[str, Any] | None = None
    stages_config: str | None = "conf/base/stages.demo.json"

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        parse_device(value)  # the one rule (config.devices); the value is kept as written
        return value

    @field_validator("device_ids", mode="before")
    @classmethod
    def _device_ids(cls, value: Any) -> Any:
        parse_device_ids(value)  # the one rule, before the union's three messages per value
        return value


RUN_KEYS: tuple[str, ...] = tuple(RunSettings.model_fields)


def move_run_keys(parameters: dict[str, Any], where: str = "the parameters") -> list[str]:
    """Move the old top-level run-wide keys (``seed: 7``) into the ``run`` block, in place.

    Before the ``run`` block these keys sat at the top of ``parameters.yml`` and were set with
    ``--params seed=7``; both still work. ``parameters`` is one source (one file, or the command
    line's ``--params``): a key given there both ways (``seed`` and ``run.seed``) is ambiguous
    and refused, naming ``where``.

    Returns:
        The names that were moved, for the caller's one-line notice.

    Raises:
        ParameterError: a key set both by its old name and under ``run`` in this source.
    """
    moved = [name for name in RUN_KEYS if name in parameters]
    if not moved:
        return []
    run = parameters.get("run")
    run = dict(run) if isinstance(run, dict) else {}
    both = [name for name in moved if name in run]
    if both:
        raise ParameterError(
            f"{where} sets {', '.join(f'`{n}`' for n in both)} both by the old top-level name and "
            f"as `run.{both[0]}`; keep one of them (the `run` form, e.g. `run.{both[0]}`)."
        )
    for name in moved:
        run[name] = parameters.pop(name)
    parameters["run"] = run
    return moved
