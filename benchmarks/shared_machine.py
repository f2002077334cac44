"""A run on a shared machine: the demo `kedro run` alone and beside other CPU-bound processes,
with the OpenMP pool spinning (the default before threads.py) and with QSight's thread policy.

Each condition runs the whole demo pipeline (`kedro run` on the bundled sample, W&B off) in a
throw-away copy of the project, at `--image-size` px. "Busy" starts `--others` processes of two
CPU-bound threads each (SHA-256 over a buffer, which releases the GIL; no OpenMP) before the run
and stops them after it. On 2 cores with two such processes, a fair share of the machine is a
third of it, so the fair-share time is about 3x the solo time (`--others` + 1 times, in general,
when the others fill the cores).

    .venv/bin/python benchmarks/shared_machine.py                 # 64 px, 2 others, 1 repeat
    .venv/bin/python benchmarks/shared_machine.py --repeats 2

Prints one row per (condition, repeat) and the ratios, and the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _smoke import parse_args

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("02_intermediate", "03_primary", "04_feature", "05_model_input", "06_models",
          "07_model_output", "08_reporting")  # fmt: skip
BURNER = """
import hashlib, threading, time
buffer = bytes(8 << 20)
def burn():
    while True:
        hashlib.sha256(buffer).digest()
for _ in range(2):
    threading.Thread(target=burn, daemon=True).start()
time.sleep(100000)
"""


def project_copy(base: Path) -> Path:
    project = base / "project"
    project.mkdir(parents=True)
    shutil.copy2(ROOT / "pyproject.toml", project)
    shutil.copytree(ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "src").mkdir()
    (project / "data").mkdir()
    (project / "data" / "01_raw").symlink_to(ROOT / "data" / "01_raw", target_is_directory=True)
    for layer in LAYERS:
        (project / "data" / layer).mkdir()
    return project


def run_demo(policy: str, busy: int, args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory(prefix="qsight-shared-") as folder:
        project = project_copy(Path(folder))
        env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
               "WANDB_MODE": "offline", "QSIGHT_STATE_DIR": folder,
               "PYTHONPATH": str(ROOT / "src")}
        env.pop("OMP_WAIT_POLICY", None)
        env.pop("GOMP_SPINCOUNT", None)
        env["QSIGHT_THREAD_POLICY"] = policy
        burners = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(busy)]
        try:
            time.sleep(1.0 if busy else 0)  # the others are running before the run starts
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "kedro", "run", *shlex.split(args.run_args), "--params",
                 f"run.image_size={args.image_size},tracking.wandb.enabled=false,"
                 "tracking.mlflow.enabled=false"],
                cwd=project, env=env, check=True, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            return time.perf_counter() - start
        finally:
            for burner in burners:
                burner.kill()
                burner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--others", type=int, default=2, help="CPU-bound processes beside the run")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--run-args", default="",
                        help="more arguments for `kedro run`, e.g. '--pipelines ingestion' "
                             "(default: none, the whole demo)")
    args = parse_args(parser, others=1,
                      run_args="--pipelines ingestion --to-nodes ingestion.split_by_patient")
    cores = len(os.sched_getaffinity(0))
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.platform()}, {cores} cores")
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for busy in (0, args.others):
            for policy in ("spin", "auto"):
                seconds = run_demo(policy, busy, args)
                label = "busy" if busy else "alone"
                times.setdefault((policy, label), []).append(seconds)
                print(f"{policy:>5} {label:>5}: {seconds:7.1f} s", flush=True)
    best = {key: min(values) for key, values in times.items()}
    fair = (args.others * 2 + 2) / cores if args.others else 1.0  # threads wanted / cores
    for policy in ("spin", "auto"):
        alone, busy = best[(policy, "alone")], best[(policy, "busy")]
        print(f"{policy:>5}: alone {alone:.1f} s, busy {busy:.1f} s = {busy / alone:.2f}x alone "
              f"= {busy / (alone * fair):.2f}x the fair-share time ({fair:.1f}x alone)")
    print(f"auto vs spin: alone {best[('auto', 'alone')] / best[('spin', 'alone')]:.3f}x, "
          f"busy {best[('auto', 'busy')] / best[('spin', 'busy')]:.3f}x")
    print(json.dumps({f"{policy}_{label}_s": seconds for (policy, label), seconds in best.items()}))


if __name__ == "__main__":
    main()
