"""Stage schedule: the schema, the guide's default schedule, validation and precedence.

The schedule is defined once, here (:data:`GUIDE_SCHEDULE`); the bundled demo's stage file
``conf/base/stages.demo.json`` is generated from it (:func:`demo_schedule_json`,
``python -m qsight_pipeline.training.stages``), and a test keeps the two equal.

A stage is one phase of training with its own epochs, learning rate, active heads, loss weights
and set of trainable model parts. A schedule is validated as a whole *before* any work starts,
and every error names the stage (index and name) and the field, so a typo in a JSON file fails in
the first second of a run instead of after an hour of training.

The stage JSON accepted here is the old system's (``--stages-config``): a bare list of stage
objects, or ``{"stages": [...]}``. Keys the old system had but this project does not support
(``grad_accum_steps``, ``annealing_schedule``) are rejected with an explanation rather than
silently ignored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from qsight_pipeline.constants import (
    COMPRESSION,
    ENCODER,
    ENSEMBLE,
    HEAD_A,
    HEAD_B,
    HEADS,
    MODEL_PARTS,
    QUANTUM_HEAD,
)
from qsight_pipeline.errors import UserError

logger = logging.getLogger(__name__)

# Loss-weight keys, in the guide's vocabulary, and the head each one scales; ``gate_entropy``
# weighs a bonus for the entropy of the ensemble's gate weights (0 to 1), which keeps the gate
# from saturating on one head unless the ensemble's loss pays for it.
GATE_ENTROPY = "gate_entropy"
LOSS_WEIGHT_KEYS: tuple[str, ...] = ("classical_a", "classical_b", "quantum", "ensemble", GATE_ENTROPY)
LOSS_KEY_FOR_HEAD: dict[str, str] = {
    HEAD_A: "classical_a",
    HEAD_B: "classical_b",
    QUANTUM_HEAD: "quantum",
}
# Missing loss-weight keys inherit these. A weight on a masked or frozen head is harmless: a
# masked head is not computed, and a frozen head's loss has no gradient.
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {
    "classical_a": 1.0,
    "classical_b": 1.0,
    "quantum": 1.0,
    "ensemble": 1.0,
    GATE_ENTROPY: 0.1,
}

DEFAULT_LEARNING_RATE = 1e-4
DEFAULT_WEIGHT_DECAY = 1e-5
DEFAULT_PATIENCE = 3

# What a stage trains when it gives no ``trainable`` list, keyed by its name (the guide's stages).
DEFAULT_TRAINABLE: dict[str, tuple[str, ...]] = {
    "classical": (ENCODER, COMPRESSION, HEAD_A, HEAD_B, ENSEMBLE),
    "quantum": (QUANTUM_HEAD, ENSEMBLE),
    "ensemble": (ENSEMBLE,),
}
# The mask a stage gets when it gives none: the classical stage cannot use the untrained quantum
# head; later stages see every head.
DEFAULT_ACTIVE_MASK: dict[str, tuple[int, int, int]] = {"classical": (1, 1, 0)}

STAGE_KEYS: tuple[str, ...] = (
    "name",
    "num_epochs",
    "learning_rate",
    "weight_decay",
    "patience",
    "active_mask",
    "loss_weights",
    "trainable",
)
# Stage keys of the old system that are deliberately not supported, with the reason given to users.
UNSUPPORTED_KEYS: dict[str, str] = {
    "grad_accum_steps": (
        "gradient accumulation is not supported; lower the memory need with a smaller "
        "`run.batch_size` or a smaller encoder instead"
    ),
    "annealing_schedule": (
        "learning-rate annealing is not supported; every stage trains at a constant "
        "`learning_rate` (split a stage in two to lower the rate part way)"
    ),
}

class ScheduleError(UserError, ValueError):
    """A stage schedule that cannot be run; the message names the stage and the field."""


def _mask_flags(value: object) -> object:
    """``active_mask`` is exactly one 0/1 flag per head (no floats, no strings)."""
    if (
        isinstance(value, str | bytes)
        or not isinstance(value, Sequence)
        or len(value) != len(HEADS)
        or any(isinstance(flag, bool | float) or flag not in (0, 1) for flag in value)
    ):
        raise ValueError(f"must be a list of {len(HEADS)} flags (0 or 1) for [{', '.join(HEADS)}]")
    return tuple(int(flag) for flag in value)


def _loss_weights(value: object) -> object:
    """Missing keys inherit ``DEFAULT_LOSS_WEIGHTS``; unknown keys and negatives are errors."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping of loss weights")
    unknown = sorted(str(key) for key in value if key not in LOSS_WEIGHT_KEYS)
    if unknown:
        raise ValueError(
            f"has unknown key(s) {', '.join(unknown)}; allowed keys are {', '.join(LOSS_WEIGHT_KEYS)}"
        )
    return {**DEFAULT_LOSS_WEIGHTS, **value}


def _trainable_parts(value: object) -> object:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"must be a non-empty list of model parts ({', '.join(MODEL_PARTS)})")
    unknown = [str(part) for part in value if part not in MODEL_PARTS]
    if unknown:
        raise ValueError(
            f"has unknown part(s) {', '.join(unknown)}; allowed parts are {', '.join(MODEL_PARTS)}"
        )
    # The model's own part order, so equal sets compare equal.
    return tuple(part for part in MODEL_PARTS if part in value)


class Stage(BaseModel):
    """One training stage; validated field by field, every problem reported at once.

    Attributes:
        name: unique name; also part of the checkpoint file names (``stage_<name>_epoch_<n>.pth``).
        num_epochs: maximum number of epochs (early stopping may end the stage sooner).
        learning_rate: AdamW learning rate for this stage.
        weight_decay: AdamW weight decay for this stage.
        patience: stop after this many epochs without a better validation ensemble QWK;
            0 disables early stopping.
        active_mask: ``(head_a, head_b, quantum_head)``, 1 = the head is computed and gated.
        loss_weights: multipliers for ``classical_a``, ``classical_b``, ``quantum`` and ``ensemble``,
            and ``gate_entropy``, the weight of the gate's entropy bonus.
        trainable: model parts whose weights this stage updates; all others are frozen. Defaults
            by name for the guide's stages (``classical``, ``quantum``, ``ensemble``).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    num_epochs: int = Field(ge=1)
    learning_rate: float = Field(DEFAULT_LEARNING_RATE, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(DEFAULT_WEIGHT_DECAY, ge=0, allow_inf_nan=False)
    patience: int = Field(DEFAULT_PATIENCE, ge=0)
    active_mask: Annotated[tuple[int, int, int], BeforeValidator(_mask_flags)] = (1, 1, 1)
    loss_weights: Annotated[
        dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]],
        BeforeValidator(_loss_weights),
    ] = Field(default_factory=lambda: dict(DEFAULT_LOSS_WEIGHTS))
    trainable: Annotated[tuple[str, ...], BeforeValidator(_trainable_parts)] = (ENSEMBLE,)

    @model_validator(mode="before")
    @classmethod
    def _defaults_by_name(cls, raw: Any) -> Any:
        if isinstance(raw, Stage):
            return raw.to_dict()
        if not isinstance(raw, Mapping):
            raise ValueError(f"must be a mapping of stage fields, got {type(raw).__name__}")
        unsupported = [key for key in raw if key in UNSUPPORTED_KEYS]
        if unsupported:
            reasons = "; ".join(f"`{key}`: {UNSUPPORTED_KEYS[key]}" for key in unsupported)
            raise ValueError(f"field(s) {', '.join(unsupported)} not supported ({reasons}); remove them")
        raw = dict(raw)
        name = raw.get("name")
        if isinstance(name, str) and "active_mask" not in raw and name in DEFAULT_ACTIVE_MASK:
            raw["active_mask"] = DEFAULT_ACTIVE_MASK[name]
        if raw.get("trainable") is None:
            raw.pop("trainable", None)
            if isinstance(name, str) and name in DEFAULT_TRAINABLE:
                raw["trainable"] = DEFAULT_TRAINABLE[name]
            elif isinstance(name, str):
                raise ValueError(
                    f"field `trainable` is required for a stage not named "
                    f"{', '.join(DEFAULT_TRAINABLE)} (those names have defaults); list the parts "
                    f"to train from {', '.join(MODEL_PARTS)}"
                )
        return raw

    @model_validator(mode="after")
    def _heads_can_learn(self) -> Stage:
        if not any(self.active_mask):
            raise ValueError(
                f"field `active_mask` must switch on at least one head, got {list(self.active_mask)}"
            )
        on = [LOSS_KEY_FOR_HEAD[h] for h, flag in zip(HEADS, self.active_mask, strict=True) if flag]
        if not any(self.loss_weights[key] > 0 for key in [*on, "ensemble"]):
            raise ValueError(
                "field `loss_weights` gives weight 0 to every active head and to the ensemble, "
                "so nothing would be learned"
            )
        for head, flag in zip(HEADS, self.active_mask, strict=True):
            if head in self.trainable and not flag:
                raise ValueError(
                    f"field `trainable` lists {head} but field `active_mask` switches it off, so "
                    "it could never learn; switch it on or remove it from `trainable`"
                )
        return self

    def __hash__(self) -> int:  # a stage's identity is its name; loss_weights is a dict
        return hash(self.name)

    @property
    def runs_on_images(self) -> bool:
        """True when the stage trains the encoder or the compression module, so it needs images."""
        return ENCODER in self.trainable or COMPRESSION in self.trainable

    @property
    def trains_quantum(self) -> bool:
        """True when the stage updates the quantum head."""
        return QUANTUM_HEAD in self.trainable

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form; ``parse_stages([stage.to_dict()])`` gives the stage back."""
        return self.model_dump(mode="json")


def _where(index: int, raw: object) -> str:
    name = raw.get("name") if isinstance(raw, Mapping) else getattr(raw, "name", None)
    return f"stage {index} ({name!r})" if name is not None else f"stage {index}"


def _problems(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown field; allowed fields are {', '.join(STAGE_KEYS)}"
        elif item["type"] == "missing":
            message = "is required"
        elif not isinstance(item.get("input"), dict | list | tuple):
            message += f", got {item.get('input')!r}"
        lines.append(f"field `{field}` {message}" if field else message)
    return lines


def _parse_one(raw: object, index: int) -> Stage:
    try:
        return Stage.model_validate(raw)
    except ValidationError as error:
        where = _where(index, raw)
        raise ScheduleError("; ".join(f"{where}: {line}" for line in _problems(error))) from None


# The guide's three stages (section 4 of the user guide), as a stage file writes them: the one
# definition of the schedule. ``kedro run`` in the production environments (``stages_config:
# null``) and the Python API use it as is; the bundled demo's file is generated from it.
GUIDE_SCHEDULE: tuple[dict[str, Any], ...] = (
    {
        "name": "classical",
        "num_epochs": 12,
        "learning_rate": 1e-4,
        "patience": 4,
        "active_mask": [1, 1, 0],
        "loss_weights": {"classical_a": 1.0, "classical_b": 1.0, "quantum": 0.0, "ensemble": 0.5},
    },
    {
        "name": "quantum",
        "num_epochs": 8,
        "learning_rate": 5e-5,
        "patience": 4,
        "active_mask": [1, 1, 1],
        "loss_weights": {"classical_a": 0.0, "classical_b": 0.0, "quantum": 1.0, "ensemble": 0.5},
    },
    {
        "name": "ensemble",
        "num_epochs": 5,
        "learning_rate": 1e-4,
        "patience": 3,
        "active_mask": [1, 1, 1],
        "loss_weights": {"classical_a": 0.0, "classical_b": 0.0, "quantum": 0.0, "ensemble": 1.0},
    },
)
# The bundled demo's recipe (``conf/base/stages.demo.json``, generated by
# :func:`demo_schedule_json`): the guide's schedule with the quantum head trained by the study's
# recipe, 40 epochs at 3e-3 (``quantum_study``: its epochs and the learning rate it picks for the
# head); at 5e-5 the freshly initialised head barely moves in 8 epochs on the demo's 210 images.
DEMO_QUANTUM_RECIPE: dict[str, Any] = {"num_epochs": 40, "learning_rate": 3e-3, "patience": 10}
DEMO_SCHEDULE_FILE = "conf/base/stages.demo.json"


def default_stage_schedule() -> list[Stage]:
    """The guide's three stages (section 4 of the user guide), :data:`GUIDE_SCHEDULE`.

    1. ``classical``: 12 epochs at 1e-4, quantum head masked; trains encoder, compression,
       heads A/B and the ensemble.
    2. ``quantum``: 8 epochs at 5e-5; trains only the quantum head and the ensemble.
    3. ``ensemble``: 5 epochs at 1e-4; every head frozen, only the ensemble's gate learns.
    """
    return parse_stages(list(GUIDE_SCHEDULE))


def demo_schedule() -> list[dict[str, Any]]:
    """The bundled demo's schedule as its stage file holds it: :data:`GUIDE_SCHEDULE` with the
    quantum stage at :data:`DEMO_QUANTUM_RECIPE`."""
    return [
        {**stage, **DEMO_QUANTUM_RECIPE} if stage["name"] == "quantum" else dict(stage)
        for stage in GUIDE_SCHEDULE
    ]


def demo_schedule_json() -> str:
    """The text of ``conf/base/stages.demo.json`` (``tests/test_stages.py`` keeps the file equal
    to it; write it with ``python -m qsight_pipeline.training.stages``)."""
    return json.dumps({"stages": demo_schedule()}, indent=2) + "\n"


def _stage_group(stage: Stage) -> int:
    """0: image stage, 1: cache stage training the quantum head, 2: other cache stage."""
    if stage.runs_on_images:
        return 0
    return 1 if stage.trains_quantum else 2


_GROUP_WORDS = (
    "trains the encoder or compression module (an image stage)",
    "trains the quantum head from the feature cache",
    "trains from the feature cache without the quantum head",
)


def parse_stages(raw: Sequence[Mapping[str, Any] | Stage] | Mapping[str, Any]) -> list[Stage]:
    """Validate a schedule and return its stages.

    Args:
        raw: a list of stage mappings (or :class:`Stage` objects), or ``{"stages": [...]}``.

    Raises:
        ScheduleError: naming the stage (index and name) and the field of every problem.
            Besides per-field checks: stage names must be unique, and the order must be image
            stages, then cache stages that train the quantum head, then other cache stages
            (the ``classical``, ``quantum`` and ``ensemble`` pipelines run them in that order).
    """
    if isinstance(raw, Mapping):
        extra = sorted(str(key) for key in raw if key != "stages")
        if "stages" not in raw or extra:
            raise ScheduleError(
                "a schedule mapping must have exactly one key, `stages`, holding the list of stages"
                + (f"; found unexpected key(s) {', '.join(extra)}" if extra else "")
            )
        raw = raw["stages"]
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise ScheduleError(f"a schedule must be a list of stages, got {type(raw).__name__}")
    if not raw:
        raise ScheduleError("a schedule must hold at least one stage, got an empty list")

    stages, problems = [], []
    for index, item in enumerate(raw):
        try:
            stages.append(_parse_one(item, index))
        except ScheduleError as error:
            problems.append(str(error))
    if problems:  # every stage's problems at once
        raise ScheduleError("; ".join(problems))

    seen: dict[str, int] = {}
    for index, stage in enumerate(stages):
        if stage.name in seen:
            raise ScheduleError(
                f"{_where(index, stage)}: field `name` repeats stage {seen[stage.name]}; "
                "stage names must be unique (they name the checkpoints)"
            )
        seen[stage.name] = index

    for index in range(1, len(stages)):
        earlier = max(range(index), key=lambda i: _stage_group(stages[i]))
        if _stage_group(stages[index]) < _stage_group(stages[earlier]):
            raise ScheduleError(
                f"{_where(index, stages[index])}: field `trainable` "
                f"({', '.join(stages[index].trainable)}) {_GROUP_WORDS[_stage_group(stages[index])]}, "
                f"but it comes after {_where(earlier, stages[earlier])}, which "
                f"{_GROUP_WORDS[_stage_group(stages[earlier])]}. Order the schedule: image stages, "
                "then quantum cache stages, then other cache stages"
            )
    return stages


def load_stages_file(path: str | Path, setting: str = "run.stages_config") -> list[Stage]:
    """Read a stage JSON file (a bare list or ``{"stages": [...]}``) and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ScheduleError(
            f"`{setting}` points to {str(path)!r}, which does not exist; set `{setting}` to a JSON "
            "stage file or to null to use the default schedule"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ScheduleError(f"`{setting}` file {str(path)!r} is not valid JSON: {error}") from error
    try:
        return parse_stages(raw)
    except ScheduleError as error:
        raise ScheduleError(f"`{setting}` file {str(path)!r}: {error}") from error


def resolve_schedule(
    stages: Sequence[Mapping[str, Any] | Stage] | Mapping[str, Any] | None,
    stages_config: str | Path | None,
) -> list[Stage]:
    """Pick the schedule with the guide's precedence and validate it.

    ``stages`` (a list in the parameters) wins over ``stages_config`` (a JSON file), which wins
    over :func:`default_stage_schedule`.
    """
    if stages is not None:
        if stages_config:
            logger.info(
                "Both `run.stages` and `run.stages_config` (%s) are set; `run.stages` wins, as in the guide.",
                stages_config,
            )
        try:
            return parse_stages(stages)
        except ScheduleError as error:
            raise ScheduleError(f"`run.stages` parameter: {error}") from error
    if stages_config:
        return load_stages_file(stages_config)
    return default_stage_schedule()


def split_schedule(stages: Sequence[Stage]) -> dict[str, list[Stage]]:
    """Group stages by the pipeline that runs them.

    Returns ``{"classical": image stages, "quantum": cache stages that train the quantum head,
    "ensemble": the other cache stages}``, each in schedule order.
    """
    groups: dict[str, list[Stage]] = {"classical": [], "quantum": [], "ensemble": []}
    for stage in stages:
        groups[("classical", "quantum", "ensemble")[_stage_group(stage)]].append(stage)
    return groups


if __name__ == "__main__":  # regenerate the demo's stage file from the one definition above
    Path(DEMO_SCHEDULE_FILE).write_text(demo_schedule_json(), encoding="utf-8")
