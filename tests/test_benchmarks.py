"""Benchmarks cannot rot: every script in ``benchmarks/`` runs in its smallest form (``--smoke``:
a few images, one repeat) and prints the command that produced its figures and, last, the
figures as one line of JSON.

The scripts are found by a glob, so a new one is covered without touching this file; it only
has to take ``--smoke`` (``benchmarks/_smoke.py``). They run in a private copy of the shared
smoke run (``tests/conftest.py``), whose ``data/`` holds the trained model, the feature cache and
the image caches that their default paths point to, each forked from an interpreter that already
imported torch and the other heavy packages (``tests/fixtures/warm_python.py``).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KedroProject
from tests.fixtures import warm_python

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))
SHELL_SCRIPTS = sorted(BENCHMARKS.glob("*.sh"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(smoke_project: KedroProject, tmp_path_factory: pytest.TempPathFactory) -> KedroProject:
    """A copy of the smoke run that the scripts may read and write (startup.py runs kedro in it)."""
    target = tmp_path_factory.mktemp("benchmarks") / "project"
    shutil.copytree(smoke_project.path, target, symlinks=True)
    return KedroProject(target)


def _numbers(value) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)


def test_every_benchmark_is_found():
    assert len(SCRIPTS) >= 10 and BENCHMARKS / "quantum_study.py" in SCRIPTS


def _prints_its_figures(script: Path, project: KedroProject) -> None:
    command = [sys.executable, str(script), "--smoke"]
    if '"--project"' in script.read_text():  # startup.py: a project with a feature cache
        command += ["--project", str(project.path)]
    result = warm_python.run(command, project.path, project.environment(), timeout=600)
    output = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    shown = [line for line in lines if line.startswith("command:")]
    assert shown and script.name in shown[0] and "--smoke" in shown[0], output
    figures = json.loads(lines[-1])
    numbers = list(_numbers(figures))
    assert isinstance(figures, dict | list) and numbers, lines[-1]
    assert all(math.isfinite(n) for n in numbers) and any(n > 0 for n in numbers), lines[-1]


# Two halves, one class each: pytest-xdist's --dist loadscope gives each class to a worker, so the
# two workers share the scripts (each with its own copy of the smoke run).
class TestFirstHalf:
    @pytest.mark.parametrize("script", SCRIPTS[0::2], ids=lambda path: path.name)
    def test_benchmark_prints_its_figures(self, script: Path, project: KedroProject):
        _prints_its_figures(script, project)


class TestSecondHalf:
    @pytest.mark.parametrize("script", SCRIPTS[1::2], ids=lambda path: path.name)
    def test_benchmark_prints_its_figures(self, script: Path, project: KedroProject):
        _prints_its_figures(script, project)


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_shell_benchmark_names_scripts_that_exist(script: Path):
    """A shell suite (gpu_suite.sh) is checked, not run: it runs the scripts above at full size
    on a GPU, and each of them runs here with --smoke."""
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    named = {word for word in script.read_text().split() if word.startswith("benchmarks/")}
    assert named and all((BENCHMARKS.parent / name).is_file() for name in named), named
