"""Logs a person can read: one line per record when stderr is not a terminal (CI, ``nohup``, a
scheduler's log), Kedro's rich output on a terminal, and no deprecation warning of ours."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from qsight_pipeline.kedro_app.console_logging import finish_console_handler

REPO = Path(__file__).resolve().parents[1]
# `2026-01-31 12:00:00 INFO kedro.runner.sequential_runner: ...`; MLflow logs its own way.
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: \S")
MLFLOW_RECORD = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (INFO|WARNING) mlflow\.\S+: \S")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _logger_with_console(stream: io.StringIO) -> logging.Logger:
    """A logger set up as conf/logging.yml sets up the root logger, writing to ``stream``."""
    config = yaml.safe_load((REPO / "conf/logging.yml").read_text())
    handler = logging.StreamHandler(stream)
    handler.set_name("console")
    handler.setFormatter(logging.Formatter(config["formatters"]["one_line"]["format"]))
    logger = logging.getLogger(f"qsight-test-console-{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def test_the_shipped_configuration_is_one_kedro_accepts():
    from kedro.framework.project import LOGGING

    config = yaml.safe_load((REPO / "conf/logging.yml").read_text())
    LOGGING._validate_logging_config(config)  # only `logging` / `kedro.logging` classes
    assert config["root"]["handlers"] == ["console"]
    assert config["handlers"]["console"]["stream"] == "ext://sys.stderr"


def test_off_a_terminal_each_record_is_one_line(monkeypatch):
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # captureWarnings sets it
    monkeypatch.setattr(logging, "_warnings_showwarning", None)
    stream = io.StringIO()
    logger = _logger_with_console(stream)
    finish_console_handler(logger)
    logger.warning("first line\nsecond line\n\n  indented third %s", "arg")
    logger.info("plain")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert re.match(RECORD, lines[0]), lines[0]
    assert lines[0].endswith(": first line second line indented third arg")
    assert lines[1].endswith(f"INFO {logger.name}: plain")


def test_on_a_terminal_the_handler_is_kedros_rich_one(monkeypatch):
    from kedro.logging import RichHandler

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # rich installs its own
    logger = _logger_with_console(Terminal())
    finish_console_handler(logger)
    (handler,) = logger.handlers
    assert isinstance(handler, RichHandler) and handler.get_name() == "console"


@pytest.mark.slow
def test_a_refused_crafted_checkpoint_is_a_short_log_of_one_line_records(kedro_project, tmp_path):
    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    out, photos = tmp_path / "out", tmp_path / "photos"
    out.mkdir()
    photos.mkdir()
    torch.save({"format": "x", "model_config": {}, "model_state": Shell()},
               out / "complete_checkpoint.pth")
    source = sorted(kedro_project.data("01_raw/sample").rglob("*.jpeg"))[0]
    (photos / source.name).write_bytes(source.read_bytes())
    environment = {k: v for k, v in kedro_project.environment().items() if k != "COLUMNS"}
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--pipelines", "predict", "--params",
         f"run.output_dir={out},predict.input_dir={photos}"],
        cwd=kedro_project.path, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0 and not (tmp_path / "PWNED").exists()
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) < 15, "\n".join(lines)
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and "complete_checkpoint.pth holds a `posix.system` object" in errors[0]
    assert any("No nodes ran" in line for line in lines)
    others = [line for line in lines if line and line not in errors and not line.startswith("(Set")]
    assert all(RECORD.match(line) or MLFLOW_RECORD.match(line) for line in others), "\n".join(others)


@pytest.mark.slow
def test_a_cheap_command_shows_no_deprecation_warning_of_ours(kedro_project):
    ignored = subprocess.run(["git", "check-ignore", "-q", "conf/logging.yml"], cwd=REPO)
    assert ignored.returncode == 1  # committed with the project: a fresh clone logs this way
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "catalog", "describe-datasets", "-p", "predict"],
        cwd=kedro_project.path, env={**kedro_project.environment(), "PYTHONWARNINGS": "default"},
        capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "predict:" in output  # the command did its work, parameters checked on the way
    warned = [line for line in output.splitlines() if "Warning: " in line]
    ours = [line for line in warned if "/qsight_pipeline/" in line]
    assert ours == []
    assert "register_new_resolver" not in output  # Kedro's call, filtered by message and module
