"""What a user can control: the guide's flags as Kedro parameters, stage schedules, resume,
determinism, running without the quantum head, and the guide's Python API."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch

from qsight_pipeline.constants import NUM_GRADES
from qsight_pipeline.training.stages import ScheduleError, resolve_schedule

FIXTURES = Path(__file__).parent / "fixtures"
OUTPUT_DIR = "06_models/trained_model"


def _json(path: Path):
    return json.loads(Path(path).read_text())


def _stage_metrics(stages: list[dict]) -> list[dict]:
    """Stage summaries without wall-clock timings: the numbers that must repeat exactly."""
    return [
        {
            **{k: v for k, v in stage.items() if k not in ("history", "latency_samples_ms")},
            "history": [
                {k: v for k, v in record.items() if k not in ("seconds", "latency_ms")}
                for record in stage["history"]
            ],
        }
        for stage in stages
    ]


def _metrics_only(summary: dict) -> dict:
    return {"stages": _stage_metrics(summary["stages"]), "evaluation": summary["evaluation"],
            "best_validation": summary["best_validation"]}


# W&B's offline service costs ~4.5 s a run; the shared smoke run and tests/test_tracking*.py test it.
NO_WANDB = {"wandb": {"enabled": False}}
# The training pipelines after ingestion (the copy's ingested data is reused).
TRAINING = ["classical", "features", "quantum", "ensemble"]


def run_session(project, monkeypatch, env: str = "smoke", log_handler=None,
                pipelines: list[str] | None = None, **runtime_params) -> None:
    """``kedro run`` in this process (no interpreter start-up), inside ``project``.

    Runtime parameters nest as the CLI nests them: ``quantum={"enabled": False}`` is
    ``--params quantum.enabled=false``; ``pipelines`` is ``--pipelines``. ``log_handler`` joins the root logger once Kedro has
    configured logging (its configuration clears the handlers of the project's loggers, and its
    console handler writes to the stderr of the first session in this process).
    """
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    monkeypatch.chdir(project.path)
    bootstrap_project(project.path)
    with KedroSession.create(project.path, env=env, runtime_params=runtime_params) as session:
        if log_handler is not None:
            logging.getLogger().addHandler(log_handler)
        try:
            session.run(pipeline_names=pipelines)
        finally:
            logging.getLogger().removeHandler(log_handler)


# --------------------------------------------------------------------------- the guide's flags


def test_guide_flags_as_params_take_effect(kedro_project, tmp_path):
    output_dir = tmp_path / "outputs" / "my_run"
    checkpoint_dir = tmp_path / "checkpoints"
    result = kedro_project.run(
        env="smoke",
        params={
            "run.output_dir": output_dir,          # --output-dir
            "checkpoint_dir": checkpoint_dir,      # --checkpoint-dir, by its old top-level name
            "seed": 7,                             # --seed, by its old top-level name
            "run.batch_size": 8,                   # --batch-size
            "run.grad_clip": 0,                    # --grad-clip 0
            "run.latency_tracking": "false",       # --disable-latency
            "model.encoder_type": "vit",           # --encoder-type
            "model.encoder_name": "test_vit",
            "model.compressed_dim": 8,
            "quantum.n_qubits": 2,                 # --quantum-qubits
            "quantum.shots": 256,                  # --quantum-shots
        },
    )
    for name in ("complete_checkpoint.pth", "model_info.json", "training_summary.json",
                 "phase1_classical_model.pth", "quantum_training_data.pkl"):
        assert (output_dir / name).is_file()
    assert "--params: `seed`, `checkpoint_dir` are the old top-level name" in " ".join(
        (result.stdout + result.stderr).split())  # the one-line notice, however the log wraps
    assert not kedro_project.data(f"{OUTPUT_DIR}/model_info.json").exists()

    info = _json(output_dir / "model_info.json")
    assert (info["encoder_type"], info["encoder_name"]) == ("vit", "test_vit")
    assert info["compressed_dim"] == 8
    assert (info["quantum_qubits"], info["quantum_shots"]) == (2, 256)

    summary = _json(output_dir / "training_summary.json")
    assert summary["config"]["run"]["seed"] == 7 and summary["config"]["run"]["grad_clip"] == 0
    assert summary["config"]["run"]["checkpoint_dir"] == str(checkpoint_dir)
    assert summary["latency_ms"] == {}
    assert all(record["latency_ms"] == {} for s in summary["stages"] for record in s["history"])

    epochs = {s["name"]: s["epochs_run"] for s in summary["stages"]}
    expected = {f"stage_{name}_epoch_{n}.pth" for name, count in epochs.items()
                for n in range(1, count + 1)}
    assert expected <= {p.name for p in checkpoint_dir.glob("*.pth")}

    checkpoint = torch.load(output_dir / "complete_checkpoint.pth", weights_only=True)
    projection = checkpoint["model_state"]["quantum_head.projection.weight"]
    assert tuple(projection.shape) == (2, 8)  # n_qubits x compressed_dim


# --------------------------------------------------------------------------- resume, determinism


def test_two_runs_with_the_same_seed_give_identical_metrics(smoke_project, smoke_copy):
    smoke_copy.run("--pipelines", "classical,features,quantum,ensemble", env="smoke")
    again = _json(smoke_copy.data(f"{OUTPUT_DIR}/training_summary.json"))
    first = _json(smoke_project.data(f"{OUTPUT_DIR}/training_summary.json"))
    assert _metrics_only(again) == _metrics_only(first)


# --------------------------------------------------------------------------- no quantum


class _Records(logging.Handler):
    """Keeps every log record of a run, whichever test of this worker ran first."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_default_run_without_qiskit_continues_classical_only(smoke_copy, monkeypatch):
    for module in ("qiskit", "qiskit_machine_learning"):
        monkeypatch.setitem(sys.modules, module, None)  # "import qiskit" now fails
    records = _Records()
    run_session(smoke_copy, monkeypatch, log_handler=records,
                output_dir=str(smoke_copy.path / "no_qiskit"), tracking=NO_WANDB)
    warnings = [r.getMessage() for r in records.records if r.levelno == logging.WARNING]
    assert any("missing package(s) qiskit" in w and "pip install" in w for w in warnings), warnings
    info = _json(smoke_copy.path / "no_qiskit" / "model_info.json")
    assert info["quantum_enabled"] is False and info["quantum_qubits"] is None
    summary = _json(smoke_copy.path / "no_qiskit" / "training_summary.json")
    assert set(summary["evaluation"]["test"]) == {"head_a", "head_b", "ensemble"}
    for stage in summary["stages"]:
        for record in stage["history"]:
            assert record["ensemble_weights"].get("quantum_head", 0.0) == 0.0


def test_quantum_disabled_skips_the_quantum_stage(smoke_copy, monkeypatch):
    run_session(smoke_copy, monkeypatch, quantum={"enabled": False}, tracking=NO_WANDB,
                output_dir=str(smoke_copy.path / "off"))
    info = _json(smoke_copy.path / "off" / "model_info.json")
    assert info["quantum_enabled"] is False
    summary = _json(smoke_copy.path / "off" / "training_summary.json")
    assert [s["name"] for s in summary["stages"]] == ["classical", "ensemble"]
    assert "quantum_head" not in summary["evaluation"]["val"]


# --------------------------------------------------------------------------- stage schedules


def test_guide_stage_files_load_in_both_shapes():
    bare = resolve_schedule(None, str(FIXTURES / "guide_stages_config.json"))
    assert [(s.name, s.num_epochs, s.weight_decay) for s in bare] == [("classical", 10, 1e-5)]
    wrapped = resolve_schedule(None, str(FIXTURES / "guide_config_file_stages.json"))
    assert [(s.name, s.num_epochs) for s in wrapped] == [("classical", 8), ("ensemble", 4)]
    # Missing loss weights inherit the defaults.
    assert wrapped[1].loss_weights["ensemble"] == 1.0
    assert set(wrapped[1].loss_weights) == {"classical_a", "classical_b", "quantum", "ensemble",
                                            "gate_entropy"}


@pytest.mark.parametrize(
    "fixture, stages_run",
    [("guide_stages_config.json", ["classical"]),
     ("guide_config_file_stages.json", ["classical", "ensemble"])],
)
def test_guide_stage_files_run_as_written(fixture, stages_run, make_sample, tmp_path):
    """The guide's two examples, verbatim, train a model end to end (tiny data, so it is quick)."""
    from qsight_pipeline import (
        DatasetConfig,
        TrainingConfig,
        create_dataloaders,
        train_hybrid_model,
    )

    root = make_sample("tanlikesmath", patients=8, size=32)
    train_loader, val_loader, classes = create_dataloaders(
        DatasetConfig(root=root, batch_size=8, image_size=32, val_fraction=0.25, test_fraction=0.25)
    )
    stages = resolve_schedule(None, str(FIXTURES / fixture))
    model, summary = train_hybrid_model(
        train_loader, val_loader, classes,
        config=TrainingConfig(stages=stages, model={"encoder_name": "test_resnet", "pretrained": False}),
        encoder_type="resnet", quantum_enabled=False,
    )
    assert [s["name"] for s in summary["stages"]] == stages_run
    for stage, spec in zip(summary["stages"], stages, strict=True):
        assert 1 <= stage["epochs_run"] <= spec.num_epochs


def test_stages_in_config_win_over_stages_config_which_wins_over_the_default():
    inline = [{"name": "classical", "num_epochs": 1, "learning_rate": 1e-3}]
    path = str(FIXTURES / "guide_stages_config.json")
    assert [s.num_epochs for s in resolve_schedule(inline, path)] == [1]
    assert [s.num_epochs for s in resolve_schedule(None, path)] == [10]
    assert [s.name for s in resolve_schedule(None, None)] == ["classical", "quantum", "ensemble"]


@pytest.mark.parametrize("key", ["grad_accum_steps", "annealing_schedule"])
def test_old_stage_keys_are_rejected_by_name(key):
    with pytest.raises(ScheduleError, match=key):
        resolve_schedule([{"name": "classical", "num_epochs": 1, key: 2}], None)


def test_stages_config_file_runs_through_kedro(smoke_copy, monkeypatch):
    """``stages_config`` names a JSON file in the guide's format; the run follows it."""
    schedule = json.loads((FIXTURES / "guide_config_file_stages.json").read_text())
    for stage in schedule["stages"]:
        stage["num_epochs"] = 1  # keep the test fast; the shape is the guide's
    path = smoke_copy.path / "stages.json"
    path.write_text(json.dumps(schedule))
    run_session(smoke_copy, monkeypatch, stages=None, stages_config=str(path),
                output_dir=str(smoke_copy.path / "custom"), tracking=NO_WANDB, pipelines=TRAINING)
    summary = _json(smoke_copy.path / "custom" / "training_summary.json")
    assert [s["name"] for s in summary["stages"]] == ["classical", "ensemble"]


def test_bad_stages_config_path_names_the_setting(smoke_copy, monkeypatch):
    with pytest.raises(Exception, match="stages_config"):
        run_session(smoke_copy, monkeypatch, stages=None,
                    stages_config=str(smoke_copy.path / "missing.json"))


# --------------------------------------------------------------------------- Python API


def test_guide_python_api_example_runs_as_written(make_sample, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = make_sample("tanlikesmath", patients=16, size=48)
    # The guide's section 6, with the root pointed at a sample and a tiny encoder.
    from qsight_pipeline import (
        DatasetConfig,
        TrainingConfig,
        create_dataloaders,
        default_stage_schedule,
        train_hybrid_model,
    )

    config = DatasetConfig(root=root, dataset_type="tanlikesmath", batch_size=16, image_size=32)
    train_loader, val_loader, classes = create_dataloaders(config)
    training_config = TrainingConfig(
        stages=default_stage_schedule(),
        checkpoint_dir=Path("outputs/checkpoints"),
        model={"encoder_name": "test_vit", "pretrained": False},  # a tiny encoder, offline
    )
    model, summary = train_hybrid_model(
        train_loader,
        val_loader,
        classes,
        config=training_config,
        encoder_type="vit",
        quantum_enabled=True,
    )
    assert [s["name"] for s in summary["stages"]] == ["classical", "quantum", "ensemble"]
    assert summary["best_validation"]["metrics"]["ensemble"]["kappa"] is not None
    assert set(summary["evaluation"]["val"]) == {"head_a", "head_b", "quantum_head", "ensemble"}
    assert (tmp_path / "outputs" / "checkpoints" / "stage_classical_epoch_1.pth").exists()
    batch = next(iter(val_loader))
    out = model(batch["image"], active_mask=(1, 1, 1))
    assert out["fused_probs"].shape == (len(batch["grade"]), NUM_GRADES)
