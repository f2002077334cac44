"""Wall time of the quantum study (``kedro run --pipeline quantum_study``) on a feature cache.

    .venv/bin/python benchmarks/quantum_study.py \
        --cache data/06_models/trained_model/quantum_training_data.pkl [--measured-seeds 1]

Runs the default grid of ``conf/base/parameters_quantum_study.yml`` (``QuantumStudyParams()``,
every training share of ``train_fractions``) with every core (``n_jobs: -1``), on the cache the bundled sample's ``kedro run`` writes. With
``--measured-seeds k`` only the trials of the first ``k`` seeds run: every seed trains the same
contenders and settings, so the full grid takes ``seeds / k`` times as long (printed as an
estimate, with the measured part). Worker start-up is paid once and is included.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

from qsight_pipeline.config.quantum_study import QuantumStudyParams
from qsight_pipeline.study.grid import expand_grid
from qsight_pipeline.study.trials import StudyData, run_trials, worker_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path,
                        default=Path("data/06_models/trained_model/quantum_training_data.pkl"))
    parser.add_argument("--measured-seeds", type=int, default=None,
                        help="run the trials of this many seeds only and extrapolate")
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--epochs", type=int, default=None, help="override the default epochs")
    parser.add_argument("--fractions", type=float, nargs="+", default=None,
                        help="override quantum_study.train_fractions (default: the defaults)")
    args = parser.parse_args()

    overrides: dict = {"n_jobs": args.n_jobs}
    if args.fractions is not None:
        overrides["train_fractions"] = args.fractions
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    params = QuantumStudyParams(**overrides)
    # The project's own feature cache, written by `kedro run` on this machine.
    with open(args.cache, "rb") as handle:
        data = StudyData.from_feature_cache(pickle.load(handle), params.train_fractions,  # noqa: S301
                                            params.train_subset_seed)
    trials = expand_grid(params)
    measured = args.measured_seeds or params.seeds
    subset = [t for t in trials if t.seed < params.first_seed + measured]

    start = time.perf_counter()
    results = run_trials(subset, data, params)
    wall = time.perf_counter() - start

    rows = pd.DataFrame([r["row"] for r in results])
    per_contender = rows.groupby("contender")["train_seconds"].agg(["count", "mean", "sum"])
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"cache: {args.cache} ({len(data.grades['train'])} training rows)")
    print(f"cores: {worker_count(params.n_jobs)} workers (os.cpu_count() = {os.cpu_count()}); "
          f"1-minute load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"grid: {len(trials)} trials; measured {len(subset)} ({measured} of {params.seeds} "
          f"seeds), epochs {params.epochs}, batch size {params.batch_size}")
    print(per_contender.round(2).to_string())
    per_share = rows.groupby("train_fraction").agg(trials=("train_seconds", "count"),
                                                   images=("n_train", "first"),
                                                   train_seconds=("train_seconds", "sum"))
    print(per_share.round(1).to_string())
    print(f"measured wall time: {wall:.1f} s")
    estimate = wall * len(trials) / len(subset)
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}")
    print(f"estimated wall time of the full default grid: {estimate:.1f} s")
    print(json.dumps({"benchmark": "quantum_study", "trials": len(trials),
                      "measured_trials": len(subset), "workers": worker_count(params.n_jobs),
                      "measured_wall_s": round(wall, 1), "estimated_full_grid_s": round(estimate, 1),
                      "load_average_1min": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
