"""Wall time of the quantum study (``kedro run --pipelines quantum_study``) on a feature cache.

    .venv/bin/python benchmarks/quantum_study.py \
        --cache data/06_models/trained_model/quantum_training_data.pkl [--fractions 0.25 --compare]

Runs the default grid of ``conf/base/parameters_quantum_study.yml`` (``QuantumStudyParams()``,
every training share of ``train_fractions``) with every core (``n_jobs: -1``), on the cache the
bundled sample's ``kedro run`` writes. The worker processes are started first and their start-up
is printed apart; the table and the summary (``build_table``) are timed too. There is no
partial-grid estimate: the trials of one setting (every seed and learning rate) train together,
so a part of the grid does not run at the speed of the whole.

``--compare`` also runs the same trials one by one (``run_trials(vectorise=False)``, the path
before trials of one setting were trained together with ``fit_together``) right after, and
prints both wall times and their ratio; use it with ``--fractions 0.25`` to keep it short.
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
import yaml
from joblib import Parallel, delayed

from _smoke import parse_args
from qsight_pipeline.config.quantum_study import QuantumStudyParams
from qsight_pipeline.study.grid import expand_grid
from qsight_pipeline.study.summary import build_table, summarise
from qsight_pipeline.study.trials import StudyData, run_trials, worker_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path,
                        default=Path("data/06_models/trained_model/quantum_training_data.pkl"))
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--epochs", type=int, default=None, help="override the default epochs")
    parser.add_argument("--fractions", type=float, nargs="+", default=None,
                        help="override quantum_study.train_fractions (default: the defaults)")
    parser.add_argument("--compare", action="store_true",
                        help="also run the same trials one by one and print the ratio")
    parser.add_argument("--env", default=None,
                        help="a Kedro environment whose parameters_quantum_study.yml sets the grid "
                             "(e.g. smoke); default: the defaults of QuantumStudyParams")
    args = parse_args(parser, n_jobs=1, env="smoke", fractions=[1.0], epochs=1)

    overrides: dict = {**environment_grid(args.env), "n_jobs": args.n_jobs}
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

    # Start the workers (and their imports) first, so that both timings below exclude it.
    start = time.perf_counter()
    jobs = worker_count(params.n_jobs)
    Parallel(n_jobs=jobs, backend="loky")(delayed(_warm_up)() for _ in range(jobs))
    start_up = time.perf_counter() - start

    start = time.perf_counter()
    results = run_trials(trials, data, params)
    wall = time.perf_counter() - start
    start = time.perf_counter()
    summarise(build_table(trials, results, data), params)
    tabulating = time.perf_counter() - start

    rows = pd.DataFrame([r["row"] for r in results])
    per_contender = rows.groupby("contender")["train_seconds"].agg(["count", "mean", "sum"])
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"cache: {args.cache} ({len(data.grades['train'])} training rows)")
    print(f"cores: {worker_count(params.n_jobs)} workers (os.cpu_count() = {os.cpu_count()}); "
          f"1-minute load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"grid: {len(trials)} trials ({params.seeds} seeds), epochs {params.epochs}, "
          f"batch size {params.batch_size}")
    print(per_contender.round(2).to_string())
    per_share = rows.groupby("train_fraction").agg(trials=("train_seconds", "count"),
                                                   images=("n_train", "first"),
                                                   train_seconds=("train_seconds", "sum"))
    print(per_share.round(1).to_string())
    print(f"worker start-up (excluded below): {start_up:.1f} s")
    print(f"measured wall time: {wall:.1f} s, then the table and summary: {tabulating:.1f} s")
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}")
    figures = {"benchmark": "quantum_study", "trials": len(trials),
               "workers": worker_count(params.n_jobs), "start_up_s": round(start_up, 1),
               "wall_s": round(wall, 1), "table_and_summary_s": round(tabulating, 1),
               "load_average_1min": round(os.getloadavg()[0], 1)}
    if args.compare:
        start = time.perf_counter()
        alone = run_trials(trials, data, params, vectorise=False)
        one_by_one = time.perf_counter() - start
        table = pd.DataFrame([r["row"] for r in results]).drop(columns="train_seconds")
        other = pd.DataFrame([r["row"] for r in alone]).drop(columns="train_seconds")
        gaps = (table["val_qwk"] - other["val_qwk"]).abs().groupby(table["value"]).max()
        gap = float(gaps[gaps.index <= 3e-3].max())
        print(f"the same {len(trials)} trials one by one: {one_by_one:.1f} s; trained together: "
              f"{wall:.1f} s; ratio {one_by_one / wall:.2f}x")
        print("largest validation-QWK difference per learning rate (or C):")
        print(gaps.round(4).to_string())
        figures.update(one_by_one_wall_s=round(one_by_one, 1),
                       ratio=round(one_by_one / wall, 2), val_qwk_gap_low_rates=float(gap))
    print(json.dumps(figures))


def environment_grid(env: str | None) -> dict:
    """The ``quantum_study`` block of ``conf/<env>/parameters_quantum_study.yml`` ({} for none)."""
    if env is None:
        return {}
    path = Path(__file__).resolve().parents[1] / "conf" / env / "parameters_quantum_study.yml"
    return dict(yaml.safe_load(path.read_text())["quantum_study"])


def _warm_up() -> None:
    import qsight_pipeline.models.estimators  # noqa: F401  torch, scikit-learn and the heads
    from qsight_pipeline.models.quantum import torch_executor  # noqa: F401  qiskit


if __name__ == "__main__":
    main()
