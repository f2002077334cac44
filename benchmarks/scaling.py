"""How the pipeline's cost grows with the number of images: wall time and peak memory per stage.

For each size it builds a tanlikesmath-layout data set from the project's generator, runs each
stage as its own ``kedro run`` in a throw-away copy of the project, and samples the memory of the
whole process tree (the command and any DDP or loader children) every 50 ms:

- ``rss``: resident set size, which counts the memory-mapped image cache's resident file pages;
- ``anon``: ``RssAnon`` from ``/proc/<pid>/status``, the process's own (anonymous) memory;
- ``uss``: memory unique to the processes (psutil), sampled every 0.5 s (it is slow to read).

Stages: ``ingestion`` (scan + patient split), ``cache`` (the rest of the ingestion pipeline, mostly
the decode-once image cache; its time is the full ingestion run minus the first), ``classical``
(one epoch of the demo encoder at the demo's 128 px), ``features`` (the feature export) and
``quantum`` (one epoch of the quantum stage). Every ``kedro run`` pays the same start-up (the
``startup`` row: ``kedro registry list``); subtract it to compare stages.

The generator draws ~4 images/s at 512 px, so only ``--base`` images (default 300) are drawn at
``--size`` px; larger sets reuse them under new patient ids (hard links: same bytes on disk, new
rows for every stage to process). Reused files may be in the OS page cache, so ingestion reads
are the cheap case; decoding still happens once per row.

    .venv/bin/python benchmarks/scaling.py                       # 300 and 3,000 images
    .venv/bin/python benchmarks/scaling.py --sizes 300 3000 30000
    .venv/bin/python benchmarks/scaling.py --sizes 60 --base 60 --size 96   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import yaml

from _smoke import parse_args

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("01_raw", "02_intermediate", "03_primary", "04_feature", "05_model_input",
          "06_models", "07_model_output", "08_reporting")  # fmt: skip
STAGES = {
    "startup": ["registry", "list"],
    "ingestion": ["run", "--pipelines", "ingestion", "--to-nodes", "ingestion.split_by_patient"],
    "ingestion+cache": ["run", "--pipelines", "ingestion"],
    "classical": ["run", "--pipelines", "classical"],
    "features": ["run", "--pipelines", "features"],
    "quantum": ["run", "--pipelines", "quantum"],
}
ONE_EPOCH = [
    {"name": "classical", "num_epochs": 1, "learning_rate": 1e-4, "active_mask": [1, 1, 0]},
    {"name": "quantum", "num_epochs": 1, "learning_rate": 2e-3, "active_mask": [1, 1, 1]},
]


def make_dataset(root: Path, images: int, base: Path) -> None:
    """``images`` rows in the tanlikesmath layout, reusing ``base``'s files under new ids."""
    from qsight_pipeline.data.layouts import TANLIKESMATH_IMAGE_DIR, TANLIKESMATH_LABEL_FILES

    labels = pd.read_csv(base / TANLIKESMATH_LABEL_FILES[0])
    folder = root / TANLIKESMATH_IMAGE_DIR
    folder.mkdir(parents=True)
    rows = []
    for copy in range((images + len(labels) - 1) // len(labels)):
        for image, level in labels.itertuples(index=False):
            if len(rows) == images:
                break
            patient, eye = image.rsplit("_", 1)
            new_id = f"{int(patient) + copy * 1_000_000}_{eye}"
            os.link(base / TANLIKESMATH_IMAGE_DIR / f"{image}.jpeg", folder / f"{new_id}.jpeg")
            rows.append((new_id, level))
    table = pd.DataFrame(rows, columns=["image", "level"])
    (root / TANLIKESMATH_LABEL_FILES[0]).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(root / TANLIKESMATH_LABEL_FILES[0], index=False)


def make_project(path: Path, dataset: Path) -> None:
    path.mkdir(parents=True)
    shutil.copy2(ROOT / "pyproject.toml", path / "pyproject.toml")
    shutil.copytree(ROOT / "conf", path / "conf", ignore=shutil.ignore_patterns("local"))
    (path / "conf" / "local").mkdir()
    (path / "src").mkdir()
    for layer in LAYERS:
        (path / "data" / layer).mkdir(parents=True)
    scaling = {
        "dataset": {"type": "tanlikesmath", "root": str(dataset)},
        "run": {"stages": ONE_EPOCH, "stages_config": None},
        "tracking": {"mlflow": {"enabled": False}},
    }
    (path / "conf" / "scaling").mkdir()
    (path / "conf" / "scaling" / "parameters.yml").write_text(yaml.safe_dump(scaling))


def _tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return []


def _anon_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(command: list[str], cwd: Path) -> dict[str, float]:
    """Wall seconds and peak RSS / RssAnon / USS (MiB) of ``command``'s process tree."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KEDRO_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "1", "WANDB_MODE": "offline"}  # fmt: skip
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    peaks = {"rss": 0.0, "anon": 0.0, "uss": 0.0}
    done = threading.Event()

    def sample() -> None:
        process, tick = psutil.Process(child.pid), 0
        while not done.is_set():
            tree = _tree(process)
            rss = sum(p.memory_info().rss for p in tree if p.is_running()) / 2**20
            anon = sum(_anon_kib(p.pid) for p in tree) / 1024
            peaks["rss"], peaks["anon"] = max(peaks["rss"], rss), max(peaks["anon"], anon)
            if tick % 10 == 0:
                uss = 0.0
                for p in tree:
                    try:
                        uss += p.memory_full_info().uss / 2**20
                    except psutil.Error:
                        pass
                peaks["uss"] = max(peaks["uss"], uss)
            tick += 1
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = child.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed:\n{output[-4000:]}")
    return {"wall_s": round(wall, 2), **{f"peak_{k}_mib": round(v, 1) for k, v in peaks.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 3000])
    parser.add_argument("--base", type=int, default=300, help="images drawn by the generator")
    parser.add_argument("--size", type=int, default=512, help="generated image side (px)")
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES),
                        help="the commands to measure (default: all)")
    args = parse_args(parser, argv, sizes=[40], base=40, size=64,
                      stages=["startup", "ingestion", "ingestion+cache"])
    from qsight_pipeline.data.sample import generate_sample

    print("command:", " ".join([sys.executable, *sys.argv]))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    kedro = [sys.executable, "-m", "kedro"]
    results: dict[int, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="qsight-scaling-") as folder:
        base = Path(folder) / "base"
        started = time.perf_counter()
        generate_sample(base, patients=max(1, args.base // 2), size=args.size)
        print(f"generated {args.base} base images in {time.perf_counter() - started:.1f}s")
        for images in args.sizes:
            dataset, project = Path(folder) / f"data_{images}", Path(folder) / f"project_{images}"
            make_dataset(dataset, images, base)
            make_project(project, dataset)
            results[images] = {}
            for stage in args.stages:
                extra = ["--env", "scaling"] if STAGES[stage][0] == "run" else []
                results[images][stage] = run_measured([*kedro, *STAGES[stage], *extra], project)
                print(images, stage, results[images][stage], flush=True)
            if {"ingestion", "ingestion+cache"} <= set(args.stages):
                full, scan = results[images]["ingestion+cache"], results[images]["ingestion"]
                results[images]["cache"] = {**full,
                                            "wall_s": round(full["wall_s"] - scan["wall_s"], 2)}
            shutil.rmtree(project)
            shutil.rmtree(dataset)
    print_table(results)
    print(json.dumps({"scaling": results}))


def print_table(results: dict[int, dict[str, dict[str, float]]]) -> None:
    """One row per size, one column per measured stage (the cache: full ingestion minus scan)."""
    measured = set().union(*results.values())
    stages = [s for s in ("startup", "ingestion", "cache", "classical", "features", "quantum")
              if s in measured]
    print("\n| images | " + " | ".join(stages) + " |")
    print("|---" * (len(stages) + 1) + "|")
    for images, row in results.items():
        cells = [f"{row[s]['wall_s']:.1f} s / {row[s]['peak_rss_mib']:.0f} / "
                 f"{row[s]['peak_anon_mib']:.0f} / {row[s]['peak_uss_mib']:.0f}" for s in stages]
        print(f"| {images} | " + " | ".join(cells) + " |")
    print("(each cell: wall / peak RSS / peak RssAnon / peak USS, MiB)")


if __name__ == "__main__":
    main()
