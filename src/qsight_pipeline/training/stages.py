"""Stage schedule: the schema, the guide's default schedule, validation and precedence.

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
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

# Loss-weight keys, in the guide's vocabulary, and the head each one scales.
LOSS_WEIGHT_KEYS: tuple[str, ...] = ("classical_a", "classical_b", "quantum", "ensemble")
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
        "`batch_size` or a smaller encoder instead"
    ),
    "annealing_schedule": (
        "learning-rate annealing is not supported; every stage trains at a constant "
        "`learning_rate` (split a stage in two to lower the rate part way)"
    ),
}

_STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ScheduleError(UserError, ValueError):
    """A stage schedule that cannot be run; the message names the stage and the field."""


@dataclass(frozen=True)
class Stage:
    """One training stage.

    Attributes:
        name: unique name; also part of the checkpoint file names (``stage_<name>_epoch_<n>.pth``).
        num_epochs: maximum number of epochs (early stopping may end the stage sooner).
        learning_rate: AdamW learning rate for this stage.
        weight_decay: AdamW weight decay for this stage.
        patience: stop after this many epochs without a better validation ensemble QWK;
            0 disables early stopping.
        active_mask: ``(head_a, head_b, quantum_head)``, 1 = the head is computed and gated.
        loss_weights: multipliers for ``classical_a``, ``classical_b``, ``quantum`` and ``ensemble``.
        trainable: model parts whose weights this stage updates; all others are frozen.
    """

    name: str
    num_epochs: int
    learning_rate: float = DEFAULT_LEARNING_RATE
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    patience: int = DEFAULT_PATIENCE
    active_mask: tuple[int, int, int] = (1, 1, 1)
    # hash=False: a dict is unhashable, and a stage's identity is its name anyway.
    loss_weights: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_LOSS_WEIGHTS), hash=False
    )
    trainable: tuple[str, ...] = (ENSEMBLE,)

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
        return {
            "name": self.name,
            "num_epochs": self.num_epochs,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "patience": self.patience,
            "active_mask": list(self.active_mask),
            "loss_weights": dict(self.loss_weights),
            "trainable": list(self.trainable),
        }


def default_stage_schedule() -> list[Stage]:
    """The guide's three stages (section 4 of the user guide).

    1. ``classical``: 12 epochs at 1e-4, quantum head masked; trains encoder, compression,
       heads A/B and the ensemble.
    2. ``quantum``: 8 epochs at 5e-5; trains only the quantum head and the ensemble.
    3. ``ensemble``: 5 epochs at 1e-4; every head frozen, only the ensemble's gate learns.
    """
    return parse_stages(
        [
            {
                "name": "classical",
                "num_epochs": 12,
                "learning_rate": 1e-4,
                "patience": 4,
                "active_mask": [1, 1, 0],
                "loss_weights": {
                    "classical_a": 1.0,
                    "classical_b": 1.0,
                    "quantum": 0.0,
                    "ensemble": 0.5,
                },
            },
            {
                "name": "quantum",
                "num_epochs": 8,
                "learning_rate": 5e-5,
                "patience": 4,
                "active_mask": [1, 1, 1],
                "loss_weights": {
                    "classical_a": 0.0,
                    "classical_b": 0.0,
                    "quantum": 1.0,
                    "ensemble": 0.5,
                },
            },
            {
                "name": "ensemble",
                "num_epochs": 5,
                "learning_rate": 1e-4,
                "patience": 3,
                "active_mask": [1, 1, 1],
                "loss_weights": {
                    "classical_a": 0.0,
                    "classical_b": 0.0,
                    "quantum": 0.0,
                    "ensemble": 1.0,
                },
            },
        ]
    )


def _where(index: int, name: object) -> str:
    return f"stage {index} ({name!r})" if name is not None else f"stage {index}"


def _is_int(value: object) -> bool:
    # JSON and YAML give ints; bool is an int subclass but `true` epochs is a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _parse_one(raw: object, index: int) -> Stage:
    """Turn one stage mapping into a :class:`Stage`, checking every field."""
    if isinstance(raw, Stage):
        raw = raw.to_dict()
    if not isinstance(raw, Mapping):
        raise ScheduleError(
            f"{_where(index, None)}: must be a mapping of stage fields, got {type(raw).__name__}"
        )
    name = raw.get("name")
    where = _where(index, name)

    unsupported = [key for key in raw if key in UNSUPPORTED_KEYS]
    if unsupported:
        reasons = "; ".join(f"`{key}`: {UNSUPPORTED_KEYS[key]}" for key in unsupported)
        raise ScheduleError(
            f"{where}: unsupported field(s) {', '.join(unsupported)} ({reasons}). Remove them."
        )
    unknown = sorted(str(key) for key in raw if key not in STAGE_KEYS)
    if unknown:
        raise ScheduleError(
            f"{where}: unknown field(s) {', '.join(unknown)}; allowed fields are {', '.join(STAGE_KEYS)}"
        )

    if not isinstance(name, str) or not _STAGE_NAME.match(name):
        raise ScheduleError(
            f"{where}: field `name` must be a non-empty string of letters, digits, '_', '-' or '.' "
            f"(it becomes part of checkpoint file names), got {name!r}"
        )

    if "num_epochs" not in raw:
        raise ScheduleError(f"{where}: field `num_epochs` is required")
    num_epochs = raw["num_epochs"]
    if not _is_int(num_epochs) or num_epochs < 1:
        raise ScheduleError(
            f"{where}: field `num_epochs` must be an integer >= 1, got {num_epochs!r}"
        )

    learning_rate = raw.get("learning_rate", DEFAULT_LEARNING_RATE)
    if not _is_number(learning_rate) or learning_rate <= 0:
        raise ScheduleError(
            f"{where}: field `learning_rate` must be a positive number, got {learning_rate!r}"
        )

    weight_decay = raw.get("weight_decay", DEFAULT_WEIGHT_DECAY)
    if not _is_number(weight_decay) or weight_decay < 0:
        raise ScheduleError(
            f"{where}: field `weight_decay` must be a number >= 0, got {weight_decay!r}"
        )

    patience = raw.get("patience", DEFAULT_PATIENCE)
    if not _is_int(patience) or patience < 0:
        raise ScheduleError(
            f"{where}: field `patience` must be an integer >= 0 (0 disables early stopping), got {patience!r}"
        )

    active_mask = raw.get("active_mask", DEFAULT_ACTIVE_MASK.get(name, (1, 1, 1)))
    if (
        isinstance(active_mask, str | bytes)
        or not isinstance(active_mask, Sequence)
        or len(active_mask) != len(HEADS)
        or any(flag not in (0, 1) or isinstance(flag, float) for flag in active_mask)
    ):
        raise ScheduleError(
            f"{where}: field `active_mask` must be a list of {len(HEADS)} flags (0 or 1) for "
            f"[{', '.join(HEADS)}], got {active_mask!r}"
        )
    active_mask = tuple(int(flag) for flag in active_mask)
    if not any(active_mask):
        raise ScheduleError(
            f"{where}: field `active_mask` must switch on at least one head, got {list(active_mask)}"
        )

    raw_weights = raw.get("loss_weights") or {}
    if not isinstance(raw_weights, Mapping):
        raise ScheduleError(f"{where}: field `loss_weights` must be a mapping, got {raw_weights!r}")
    unknown_weights = sorted(str(key) for key in raw_weights if key not in LOSS_WEIGHT_KEYS)
    if unknown_weights:
        raise ScheduleError(
            f"{where}: field `loss_weights` has unknown key(s) {', '.join(unknown_weights)}; "
            f"allowed keys are {', '.join(LOSS_WEIGHT_KEYS)}"
        )
    loss_weights = dict(DEFAULT_LOSS_WEIGHTS)
    for key, value in raw_weights.items():
        if not _is_number(value) or value < 0:
            raise ScheduleError(
                f"{where}: field `loss_weights.{key}` must be a number >= 0, got {value!r}"
            )
        loss_weights[key] = float(value)

    if "trainable" in raw and raw["trainable"] is not None:
        trainable = raw["trainable"]
        if (
            isinstance(trainable, str | bytes)
            or not isinstance(trainable, Sequence)
            or not trainable
        ):
            raise ScheduleError(
                f"{where}: field `trainable` must be a non-empty list of model parts "
                f"({', '.join(MODEL_PARTS)}), got {trainable!r}"
            )
        unknown_parts = [str(part) for part in trainable if part not in MODEL_PARTS]
        if unknown_parts:
            raise ScheduleError(
                f"{where}: field `trainable` has unknown part(s) {', '.join(unknown_parts)}; "
                f"allowed parts are {', '.join(MODEL_PARTS)}"
            )
        # Keep the model's own part order so equal sets compare equal.
        trainable = tuple(part for part in MODEL_PARTS if part in trainable)
    elif name in DEFAULT_TRAINABLE:
        trainable = DEFAULT_TRAINABLE[name]
    else:
        raise ScheduleError(
            f"{where}: field `trainable` is required for a stage not named "
            f"{', '.join(DEFAULT_TRAINABLE)} (those names have defaults); list the parts to train "
            f"from {', '.join(MODEL_PARTS)}"
        )

    weighted = [LOSS_KEY_FOR_HEAD[h] for h, flag in zip(HEADS, active_mask, strict=True) if flag]
    if not any(loss_weights[key] > 0 for key in [*weighted, "ensemble"]):
        raise ScheduleError(
            f"{where}: field `loss_weights` gives weight 0 to every active head and to the "
            "ensemble, so nothing would be learned"
        )

    for head, flag in zip(HEADS, active_mask, strict=True):
        if head in trainable and not flag:
            raise ScheduleError(
                f"{where}: field `trainable` lists {head} but field `active_mask` switches it off, "
                "so it could never learn; switch it on or remove it from `trainable`"
            )

    return Stage(
        name=name,
        num_epochs=num_epochs,
        learning_rate=float(learning_rate),
        weight_decay=float(weight_decay),
        patience=patience,
        active_mask=active_mask,  # type: ignore[arg-type]
        loss_weights=loss_weights,
        trainable=trainable,
    )


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
        ScheduleError: on the first problem, naming the stage (index and name) and the field.
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

    stages = [_parse_one(item, index) for index, item in enumerate(raw)]

    seen: dict[str, int] = {}
    for index, stage in enumerate(stages):
        if stage.name in seen:
            raise ScheduleError(
                f"{_where(index, stage.name)}: field `name` repeats stage {seen[stage.name]}; "
                "stage names must be unique (they name the checkpoints)"
            )
        seen[stage.name] = index

    for index in range(1, len(stages)):
        earlier = max(range(index), key=lambda i: _stage_group(stages[i]))
        if _stage_group(stages[index]) < _stage_group(stages[earlier]):
            raise ScheduleError(
                f"{_where(index, stages[index].name)}: field `trainable` "
                f"({', '.join(stages[index].trainable)}) {_GROUP_WORDS[_stage_group(stages[index])]}, "
                f"but it comes after {_where(earlier, stages[earlier].name)}, which "
                f"{_GROUP_WORDS[_stage_group(stages[earlier])]}. Order the schedule: image stages, "
                "then quantum cache stages, then other cache stages"
            )
    return stages


def load_stages_file(path: str | Path, setting: str = "stages_config") -> list[Stage]:
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
                "Both `stages` and `stages_config` (%s) are set; `stages` wins, as in the guide.",
                stages_config,
            )
        try:
            return parse_stages(stages)
        except ScheduleError as error:
            raise ScheduleError(f"`stages` parameter: {error}") from error
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
