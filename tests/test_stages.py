"""Stage schedule: the guide's defaults, validation messages, precedence and pipeline split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qsight_pipeline.training.stages import (
    DEMO_SCHEDULE_FILE,
    ScheduleError,
    Stage,
    default_stage_schedule,
    demo_schedule_json,
    load_stages_file,
    parse_stages,
    resolve_schedule,
    split_schedule,
)

ROOT = Path(__file__).resolve().parents[1]

# The guide's two JSON examples (section 3 "Optional local config file" and section 4 "Custom
# Stage Schedules"), copied verbatim.
GUIDE_CONFIG_FILE_EXAMPLE = """
{
  "stages": [
    {
      "name": "classical",
      "num_epochs": 8,
      "learning_rate": 0.0001,
      "patience": 4,
      "active_mask": [1, 1, 0]
    },
    {
      "name": "ensemble",
      "num_epochs": 4,
      "learning_rate": 5e-05,
      "loss_weights": {"ensemble": 1.0}
    }
  ]
}
"""
GUIDE_STAGES_CONFIG_EXAMPLE = """
[
  {
    "name": "classical",
    "num_epochs": 10,
    "learning_rate": 0.0001,
    "weight_decay": 1e-5,
    "patience": 4,
    "active_mask": [1, 1, 0],
    "loss_weights": {
      "classical_a": 1.0,
      "classical_b": 1.0,
      "quantum": 0.0,
      "ensemble": 0.5
    }
  }
]
"""


def test_demo_stage_file_is_generated_from_the_one_definition():
    """conf/base/stages.demo.json is the text ``training.stages`` generates: one source."""
    demo_file = ROOT / DEMO_SCHEDULE_FILE
    assert demo_file.read_text(encoding="utf-8") == demo_schedule_json(), (
        "conf/base/stages.demo.json differs from training/stages.py; regenerate it with "
        "`python -m qsight_pipeline.training.stages`"
    )
    guide, demo = default_stage_schedule(), load_stages_file(demo_file)
    # The demo is the guide's schedule but for the quantum stage: the study's recipe.
    assert [s.name for s in demo] == [s.name for s in guide]
    assert [s for s in demo if s.name != "quantum"] == [s for s in guide if s.name != "quantum"]
    quantum = {s.name: s for s in demo}["quantum"]
    assert (quantum.num_epochs, quantum.learning_rate, quantum.patience) == (40, 3e-3, 10)


def test_default_schedule_is_the_guides_three_stages():
    classical, quantum, ensemble = default_stage_schedule()

    assert (classical.name, classical.num_epochs, classical.learning_rate) == (
        "classical",
        12,
        1e-4,
    )
    assert classical.active_mask == (1, 1, 0)
    assert set(classical.trainable) == {"encoder", "compression", "head_a", "head_b", "ensemble"}
    assert classical.runs_on_images and not classical.trains_quantum

    assert (quantum.name, quantum.num_epochs, quantum.learning_rate) == ("quantum", 8, 5e-5)
    assert set(quantum.trainable) == {"quantum_head", "ensemble"}
    assert quantum.trains_quantum and not quantum.runs_on_images

    assert (ensemble.name, ensemble.num_epochs, ensemble.learning_rate) == ("ensemble", 5, 1e-4)
    assert ensemble.trainable == ("ensemble",)

    groups = split_schedule([classical, quantum, ensemble])
    assert {k: [s.name for s in v] for k, v in groups.items()} == {
        "classical": ["classical"],
        "quantum": ["quantum"],
        "ensemble": ["ensemble"],
    }


def test_guide_examples_parse_and_missing_loss_weights_inherit_defaults():
    stages = parse_stages(json.loads(GUIDE_CONFIG_FILE_EXAMPLE))
    assert [s.name for s in stages] == ["classical", "ensemble"]
    assert stages[1].loss_weights == {
        "classical_a": 1.0,
        "classical_b": 1.0,
        "quantum": 1.0,
        "ensemble": 1.0,
        "gate_entropy": 0.1,
    }
    assert stages[1].active_mask == (1, 1, 1)
    (only,) = parse_stages(json.loads(GUIDE_STAGES_CONFIG_EXAMPLE))
    assert only.weight_decay == 1e-5 and only.loss_weights["ensemble"] == 0.5


def test_stage_round_trips_through_to_dict():
    for stage in default_stage_schedule():
        assert parse_stages([stage.to_dict()]) == [stage]
    assert parse_stages(default_stage_schedule()) == default_stage_schedule()


def _stage(index: int, name: str) -> str:
    """How every schedule error locates a stage (its place and name), like a key name."""
    return f"stage {index} ('{name}')"


def _error(raw) -> str:
    with pytest.raises(ScheduleError) as info:
        parse_stages(raw)
    return str(info.value)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"active_mask": [1, 1]}, "active_mask", "list of 3 flags"),
        ({"active_mask": [0, 0, 0]}, "active_mask", "at least one head"),
        ({"learning_rate": -0.001}, "learning_rate", "greater than 0, got -0.001"),
        ({"learning_rate": float("nan")}, "learning_rate", "finite number"),
        ({"num_epochs": 2.5}, "num_epochs", "valid integer, got 2.5"),
        ({"num_epochs": True}, "num_epochs", "valid integer, got True"),
        ({"num_epochs": 0}, "num_epochs", "greater than or equal to 1, got 0"),
        ({"patience": -1}, "patience", "greater than or equal to 0, got -1"),
        ({"weight_decay": "lots"}, "weight_decay", "valid number, got 'lots'"),
        ({"loss_weights": {"classic_a": 1.0}}, "loss_weights", "classic_a"),
        ({"loss_weights": {"ensemble": -1}}, "loss_weights.ensemble", "greater than or equal to 0"),
        ({"trainable": ["encoder", "decoder"]}, "trainable", "decoder"),
        ({"trainable": ["head_a"], "active_mask": [0, 1, 0]}, "trainable", "active_mask"),
    ],
)
def test_field_errors_name_the_stage_and_the_field(change, field, words):
    good = {"name": "warmup", "num_epochs": 2, "trainable": ["head_a", "head_b", "ensemble"]}
    message = _error([{"name": "classical", "num_epochs": 1}, {**good, **change}])
    assert _stage(1, "warmup") in message
    assert f"`{field}`" in message
    assert words in message


def test_unknown_and_old_system_keys_are_rejected_by_name():
    message = _error([{"name": "classical", "num_epochs": 1, "lr_warmup": 3}])
    assert _stage(0, "classical") in message and "lr_warmup" in message

    for key in ("grad_accum_steps", "annealing_schedule"):
        message = _error([{"name": "classical", "num_epochs": 1, key: 4}])
        assert key in message and _stage(0, "classical") in message


def test_every_problem_of_every_stage_is_reported_at_once():
    message = _error(
        [
            {"name": "classical", "num_epochs": 0, "learning_rate": -1},
            {"name": "ensemble", "num_epochs": 1, "patience": -2},
        ]
    )
    assert f"{_stage(0, 'classical')}: field `num_epochs`" in message
    assert f"{_stage(0, 'classical')}: field `learning_rate`" in message
    assert f"{_stage(1, 'ensemble')}: field `patience`" in message


def test_image_stage_after_cache_stage_is_rejected():
    message = _error(
        [
            {"name": "quantum", "num_epochs": 1},
            {"name": "finetune", "num_epochs": 1, "trainable": ["encoder", "head_a"]},
        ]
    )
    assert _stage(1, "finetune") in message and _stage(0, "quantum") in message
    assert "`trainable`" in message


def test_other_schedule_errors():
    assert "`name`" in _error([{"num_epochs": 1}])
    assert "`num_epochs`" in _error([{"name": "classical"}])
    assert _stage(1, "classical") in _error([{"name": "classical", "num_epochs": 1}] * 2)
    assert "`trainable`" in _error([{"name": "probe", "num_epochs": 1}])
    assert "empty" in _error([])
    assert "`stages`" in _error({"stage": []})


def test_precedence_stages_over_stages_config_over_default(tmp_path):
    config_file = tmp_path / "stages.json"
    config_file.write_text(GUIDE_STAGES_CONFIG_EXAMPLE)
    inline = [{"name": "ensemble", "num_epochs": 2}]

    assert [s.name for s in resolve_schedule(inline, str(config_file))] == ["ensemble"]
    from_file = resolve_schedule(None, str(config_file))
    assert [(s.name, s.num_epochs) for s in from_file] == [("classical", 10)]
    assert resolve_schedule(None, None) == default_stage_schedule()

    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(GUIDE_CONFIG_FILE_EXAMPLE)
    assert [s.name for s in resolve_schedule(None, wrapped)] == ["classical", "ensemble"]


def test_bad_stages_config_file_names_the_setting_and_path(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ScheduleError, match="stages_config") as info:
        resolve_schedule(None, str(missing))
    assert str(missing) in str(info.value)

    broken = tmp_path / "broken.json"
    broken.write_text("[{'name': 'classical'}]")
    with pytest.raises(ScheduleError, match="stages_config") as info:
        resolve_schedule(None, str(broken))
    assert str(broken) in str(info.value)

    bad = tmp_path / "bad.json"
    bad.write_text('[{"name": "classical", "num_epochs": 1, "grad_accum_steps": 2}]')
    with pytest.raises(ScheduleError, match="grad_accum_steps") as info:
        resolve_schedule(None, str(bad))
    assert str(bad) in str(info.value)

    with pytest.raises(ScheduleError, match=r"`run\.stages`"):
        resolve_schedule([{"name": "classical", "num_epochs": -1}], None)


def test_stage_is_frozen():
    stage = default_stage_schedule()[0]
    with pytest.raises((AttributeError, ValueError)):  # pydantic: frozen_instance
        stage.num_epochs = 3  # type: ignore[misc]
    assert isinstance(stage, Stage)
