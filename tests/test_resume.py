"""Resume after a hard kill: the run continues from its last epoch checkpoint and ends exactly
where an uninterrupted run ends (CPU, same seed)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from qsight_pipeline.training.trainer import train_stages
from tests.fixtures import warm_python
from tests.test_trainer import CLASSICAL, loaders, metric_view, settings, tiny_model

REPO = Path(__file__).resolve().parents[1]

SCHEDULE = [
    {**CLASSICAL, "num_epochs": 3},
    {
        "name": "heads",
        "num_epochs": 2,
        "learning_rate": 1e-3,
        "active_mask": [1, 1, 0],
        "trainable": ["head_a", "head_b", "ensemble"],
    },
]

# Trains SCHEDULE; with a kill point "<stage>:<epoch>" it SIGKILLs itself right after that epoch
# (its checkpoint is already on disk), like a power cut or an OOM killer.
SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, signal, sys
    sys.path.insert(0, {repo!r})
    import torch
    torch.set_num_threads(1)  # as the reference in the test's process
    from tests.test_resume import SCHEDULE, weights_digest
    from tests.test_trainer import loaders, metric_view, settings, tiny_model
    from qsight_pipeline.training.trainer import train_stages

    out, checkpoint_dir, kill_at = sys.argv[1], sys.argv[2] or None, sys.argv[3]

    def maybe_die(record):
        with open(out + ".epochs", "a") as log:
            log.write(f"{{record['stage']}}:{{record['epoch']}}\\n")
        if kill_at == f"{{record['stage']}}:{{record['epoch']}}":
            os.kill(os.getpid(), signal.SIGKILL)

    model = tiny_model(seed=5)
    train, val = loaders(n_train=96, n_val=48, seed=5)
    summaries = train_stages(
        model, SCHEDULE, train, val,
        settings(seed=5, checkpoint_dir=checkpoint_dir, epoch_callback=maybe_die,
                 run_fingerprint="resume-test"),
    )
    with open(out, "w") as handle:
        json.dump({{"summaries": metric_view(summaries), "weights": weights_digest(model)}}, handle)
    """
)


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_script(tmp_path: Path, out: str, checkpoint_dir: str, kill_at: str = "") -> int:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(repo=str(REPO)))
    # The script runs on one torch thread, as the reference in the test's process: a reduction
    # split over another number of threads rounds differently. It is forked from the warm
    # interpreter (tests/fixtures/warm_python.py), so it sets that itself rather than through
    # OMP_NUM_THREADS, which OpenMP reads only once.
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    result = warm_python.run(
        [sys.executable, str(script), str(tmp_path / out), checkpoint_dir, kill_at],
        REPO, env, timeout=300,
    )
    if result.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(result.stderr[-3000:])
    return result.returncode


@pytest.mark.slow  # a training subprocess, SIGKILLed and rerun
def test_sigkilled_run_resumes_to_the_same_final_metrics(tmp_path, caplog):
    checkpoints = tmp_path / "checkpoints"
    # The uninterrupted reference runs in this process (same code, one thread as the scripts).
    model = tiny_model(seed=5)
    train, val = loaders(n_train=96, n_val=48, seed=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summaries = train_stages(model, SCHEDULE, train, val, settings(seed=5, run_fingerprint="x"))
    finally:
        torch.set_num_threads(threads)
    plain = {"summaries": metric_view(summaries), "weights": weights_digest(model)}

    # Killed mid-stage, then killed again early in the second stage, then run to the end.
    assert run_script(tmp_path, "unused.json", str(checkpoints), "classical:2") == -signal.SIGKILL
    assert {p.name for p in checkpoints.glob("*.pth")} == {
        "stage_classical_epoch_1.pth",
        "stage_classical_epoch_2.pth",
    }
    assert run_script(tmp_path, "unused.json", str(checkpoints), "heads:1") == -signal.SIGKILL
    assert not (tmp_path / "unused.json").exists()
    assert run_script(tmp_path, "resumed.json", str(checkpoints)) == 0

    # Each run trained only the epochs the previous one had not finished.
    ran = (tmp_path / "unused.json.epochs").read_text().split()
    assert ran == ["classical:1", "classical:2", "classical:3", "heads:1"]
    assert (tmp_path / "resumed.json.epochs").read_text().split() == ["heads:2"]

    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert [s["epochs_run"] for s in resumed["summaries"]] == [3, 2]
    assert resumed["summaries"] == plain["summaries"]
    assert resumed["weights"] == plain["weights"]

    # Everything is done now: a rerun restores the final weights without training.
    epochs = []
    model = tiny_model(seed=5)
    train, val = loaders(n_train=96, n_val=48, seed=5)
    with caplog.at_level(logging.INFO):
        summaries = train_stages(
            model,
            SCHEDULE,
            train,
            val,
            settings(seed=5, checkpoint_dir=checkpoints, epoch_callback=epochs.append,
                     run_fingerprint="resume-test"),
        )
    assert epochs == []
    assert "already finished" in caplog.text
    assert metric_view(summaries) == plain["summaries"]
    assert weights_digest(model) == plain["weights"]


def _checkpoint_warnings(caplog) -> list[tuple]:
    """The arguments of each warning the checkpoint finder logged."""
    return [r.args for r in caplog.records
            if r.name == "qsight_pipeline.training.checkpoints" and r.levelno == logging.WARNING]


def test_checkpoint_of_another_run_is_not_resumed(tmp_path, caplog):
    stage = [{**CLASSICAL, "num_epochs": 1}]
    train, val = loaders(n_train=32, n_val=32)
    train_stages(
        tiny_model(), stage, train, val, settings(checkpoint_dir=tmp_path, run_fingerprint="a")
    )

    epochs = []
    with caplog.at_level(logging.WARNING):
        train_stages(
            tiny_model(),
            stage,
            train,
            val,
            settings(checkpoint_dir=tmp_path, epoch_callback=epochs.append, run_fingerprint="b"),
        )
    assert len(epochs) == 1  # trained from scratch
    # One warning naming the folder and the other run's checkpoint it did not resume from.
    assert _checkpoint_warnings(caplog) == [(tmp_path, "stage_classical_epoch_1.pth")]


def test_damaged_checkpoint_is_skipped(tmp_path, caplog):
    stage = [{**CLASSICAL, "num_epochs": 2}]
    train, val = loaders(n_train=32, n_val=32)
    train_stages(tiny_model(), stage, train, val, settings(checkpoint_dir=tmp_path))
    # A half-written newest file (as a non-atomic writer would leave it) must not be trusted.
    newest = tmp_path / "stage_classical_epoch_2.pth"
    newest.write_bytes(newest.read_bytes()[:100])

    epochs = []
    with caplog.at_level(logging.WARNING):
        train_stages(
            tiny_model(),
            stage,
            train,
            val,
            settings(checkpoint_dir=tmp_path, epoch_callback=epochs.append),
        )
    assert [args[0] for args in _checkpoint_warnings(caplog)] == [newest]  # the damaged file
    assert [r["epoch"] for r in epochs] == [2]  # resumed after epoch 1


def test_a_resume_with_another_thread_count_says_its_numbers_will_differ(tmp_path, caplog):
    """CPU sums depend on the number of torch threads: a resume on another machine (or with
    another OMP_NUM_THREADS) continues, and says its numbers will not match an uninterrupted run."""
    stage = [{**CLASSICAL, "num_epochs": 2}]
    train, val = loaders(n_train=32, n_val=32)
    threads = torch.get_num_threads()
    other = 1 if threads > 1 else 2
    torch.set_num_threads(other)
    try:
        train_stages(tiny_model(), stage, train, val, settings(checkpoint_dir=tmp_path))
    finally:
        torch.set_num_threads(threads)

    def resumed_epochs() -> tuple[list[int], list[str]]:
        (tmp_path / "stage_classical_epoch_2.pth").unlink()  # resume after epoch 1
        epochs = []
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            train_stages(tiny_model(), stage, train, val,
                         settings(checkpoint_dir=tmp_path, epoch_callback=epochs.append))
        warned = [r.getMessage() for r in caplog.records if "torch thread" in r.getMessage()]
        return [r["epoch"] for r in epochs], warned

    epochs, warned = resumed_epochs()
    assert epochs == [2]
    assert len(warned) == 1 and f"{other} torch thread(s) and this run has {threads}" in warned[0]
    assert f"OMP_NUM_THREADS={other}" in warned[0]
    # The epoch-1 file is still the one written with `other` threads; after a run with this
    # process's count wrote both epochs, a resume with the same count says nothing.
    train_stages(tiny_model(), stage, train, val, settings(checkpoint_dir=tmp_path / "same"))
    (tmp_path / "stage_classical_epoch_1.pth").unlink()
    for path in (tmp_path / "same").iterdir():
        path.rename(tmp_path / path.name)
    epochs, warned = resumed_epochs()
    assert epochs == [2] and warned == []
