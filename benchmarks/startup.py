"""Start-up cost of the ``kedro`` commands, and of the quick quantum experiment loop.

    .venv/bin/python benchmarks/startup.py --repeats 3
    .venv/bin/python benchmarks/startup.py --repeats 3 --env smoke   # a smaller feature cache

Times, as wall-clock seconds of a fresh process each (the median and the fastest of
``--repeats``) and as CPU seconds (user + system, the median):

- ``kedro --help``;
- ``kedro registry list``;
- ``kedro run --pipelines quantum`` on the bundled sample, and the pipeline's own time from
  Kedro's log line "Pipeline execution completed successfully in X sec.": the difference is
  start-up (imports, the session, the catalog, the trackers).

It also prints the ``python -X importtime`` total of ``import qsight_pipeline.settings`` and
whether that import loaded torch, timm, qiskit, mlflow or sklearn; import times vary less than
wall times on a loaded machine.

Everything runs in a throw-away copy of the project (``conf/``, ``pyproject.toml``, an empty
``data/`` whose ``01_raw`` links to the bundled sample), so the repository's ``data/`` stays
clean. The quantum pipeline needs the feature cache (``quantum_training_data.pkl`` in
``output_dir``) of an earlier run: the script runs the default pipeline once first in a new copy
(minutes; not timed).
``--project DIR`` keeps the copy in DIR (made there if it does not exist) to reuse next time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _smoke import parse_args

REPO_ROOT = Path(__file__).resolve().parents[1]
FEATURE_CACHE = "quantum_training_data.pkl"  # in output_dir (conf/base/globals.yml), under data/
DATA_LAYERS = (
    "01_raw", "02_intermediate", "03_primary", "04_feature",
    "05_model_input", "06_models", "07_model_output", "08_reporting",
)
HEAVY_MODULES = ("torch", "timm", "torchvision", "qiskit", "mlflow", "sklearn", "matplotlib")
PIPELINE_TIME = re.compile(r"Pipeline execution completed successfully in ([0-9.]+) sec")


SOURCE = REPO_ROOT / "src"  # --src changes it, to time another version of the code


def environment() -> dict[str, str]:
    quiet = {"KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "WANDB_MODE": "offline"}
    python_path = os.pathsep.join(filter(None, [str(SOURCE), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **quiet, "PYTHONPATH": python_path, "COLUMNS": "200"}


def make_project(folder: Path) -> Path:
    """A copy of the project's configuration with its own empty data folders."""
    folder.mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "pyproject.toml", folder / "pyproject.toml")
    shutil.copytree(REPO_ROOT / "conf", folder / "conf", ignore=shutil.ignore_patterns("local"))
    (folder / "conf" / "local").mkdir()
    (folder / "src").mkdir()  # Kedro wants one; the code comes from the repository's src/
    (folder / "data").mkdir()
    for layer in DATA_LAYERS:
        if layer == "01_raw":
            (folder / "data" / layer).symlink_to(REPO_ROOT / "data" / layer, target_is_directory=True)
        else:
            (folder / "data" / layer).mkdir()
    return folder


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(command: list[str], project: Path) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system) and output of one command; a failure stops the
    benchmark with its output. CPU time suffers less than wall time from a loaded machine."""
    cpu, start = _children_cpu(), time.perf_counter()
    result = subprocess.run(command, cwd=project, env=environment(), capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    output = result.stdout + result.stderr
    if result.returncode != 0:
        sys.exit(f"`{shlex.join(command)}` failed ({result.returncode}):\n{output[-4000:]}")
    return seconds, cpu, output


def kedro(*args: str) -> list[str]:
    return [sys.executable, "-m", "kedro", *args]


def timed(name: str, command: list[str], project: Path, repeats: int) -> dict:
    walls, cpus, pipeline = [], [], []
    for _ in range(repeats):
        seconds, cpu, output = run(command, project)
        walls.append(seconds)
        cpus.append(cpu)
        found = PIPELINE_TIME.findall(output)
        if found:
            pipeline.append(float(found[-1]))
    row = {"command": shlex.join(["kedro", *command[3:]]), "wall_median_s": statistics.median(walls),
           "wall_min_s": min(walls), "walls_s": [round(w, 2) for w in walls],
           "cpu_median_s": statistics.median(cpus)}
    if pipeline:
        row["pipeline_median_s"] = statistics.median(pipeline)
    print(f"{name:<22} wall median {row['wall_median_s']:6.2f} s  min {row['wall_min_s']:6.2f} s"
          f"  CPU median {row['cpu_median_s']:6.2f} s"
          + (f"  pipeline itself {row['pipeline_median_s']:5.2f} s" if pipeline else ""))
    return row


def import_profile(project: Path) -> dict:
    """``python -X importtime`` total of ``import qsight_pipeline.settings``, and what it loaded."""
    code = (f"import qsight_pipeline.settings, sys; print([m for m in {HEAVY_MODULES!r} "
            "if m in sys.modules])")
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=project,
                            env=environment(), capture_output=True, text=True, check=True)
    total_us = 0
    for line in result.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and not parts[2].startswith("  ") and parts[1].strip().isdigit():
            total_us += int(parts[1])  # cumulative time of each top-level import
    heavy = json.loads(result.stdout.strip().replace("'", '"'))
    print(f"{'import settings':<22} importtime total {total_us / 1e6:6.2f} s  heavy modules "
          f"loaded: {', '.join(heavy) or 'none'}")
    return {"importtime_settings_s": total_us / 1e6, "heavy_modules_loaded": heavy}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--env", default=None, help="Kedro environment (e.g. smoke); default base")
    parser.add_argument("--project", type=Path, default=None,
                        help="where to keep the project copy (reused if it exists)")
    parser.add_argument("--src", type=Path, default=None,
                        help="the src/ folder of another version of the code, e.g. a `git archive` "
                             "of the commit before a change, to time it on the same machine")
    args = parse_args(parser, argv, repeats=1, env="smoke")
    global SOURCE
    SOURCE = (args.src or SOURCE).resolve()
    env_args = ["--env", args.env] if args.env else []

    print("command:", shlex.join([Path(sys.executable).name, *sys.argv]))
    print(f"code: {SOURCE}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="qsight-startup-") as tmp:
        project = args.project or Path(tmp) / "project"
        if not project.exists():
            make_project(project)
        if not any((project / "data").rglob(FEATURE_CACHE)):
            print(f"No {FEATURE_CACHE} under {project}/data: running `kedro run` once first "
                  "(not timed)...")
            seconds, _, _ = run(kedro("run", *env_args), project)
            print(f"  done in {seconds:.0f} s")
        rows = {"import": import_profile(project)}
        rows["help"] = timed("kedro --help", kedro("--help"), project, args.repeats)
        rows["registry"] = timed("kedro registry list", kedro("registry", "list"), project,
                                 args.repeats)
        rows["quantum"] = timed("kedro run -p quantum", kedro("run", "--pipelines", "quantum",
                                                              *env_args), project, args.repeats)
        if args.project is None:
            print("(the project copy is deleted; pass --project to keep reusing one)")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
