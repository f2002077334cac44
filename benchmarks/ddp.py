"""Images/s of the classical training in one process against DistributedDataParallel workers.

The same job the ``classical`` node runs with ``distributed.nproc_per_node`` (``ddp_jobs``:
spawned workers through PyTorch's elastic launcher, a ``DistributedSampler`` per rank, the global
batch split over the ranks, every rank scoring the whole validation set) is timed against the
plain trainer in this process, on the same cache, model and global batch. The figure is
images/s of the last epoch (training + validation pass, from the trainer's epoch record), so the
workers' start-up is left out; the wall time of the whole launch is printed beside it.

    python benchmarks/ddp.py --device cpu --nproc 1 2 4          # Gloo workers on CPU cores
    python benchmarks/ddp.py --device cuda --nproc 1             # NCCL, one process per GPU

On a CPU each worker gets ``CPUs / nproc`` torch threads, so the runs use the same cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _smoke import parse_args
from qsight_pipeline.config import DistributedParams
from qsight_pipeline.data.loaders import loader_options, make_loader
from qsight_pipeline.data.torch_data import CachedImageDataset
from qsight_pipeline.models.hybrid import ModelConfig, build_model
from qsight_pipeline.training.ddp_jobs import ClassicalJob, train_classical_ddp
from qsight_pipeline.training.distributed import plan_workers
from qsight_pipeline.training.stages import Stage
from qsight_pipeline.training.trainer import TrainerSettings, train_stages


def _config(args) -> ModelConfig:
    return ModelConfig.from_params(
        {"encoder_type": "resnet", "encoder_name": args.encoder, "pretrained": False}, None, args.size
    )


def _stage(args) -> Stage:
    return Stage(name="classical", num_epochs=args.epochs, learning_rate=1e-3, patience=0,
                 active_mask=(1, 1, 0))  # fmt: skip


def single_process(train, val, args) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_model(_config(args))
    device = torch.device(args.device)
    options = loader_options(args.workers, device)
    records: list[dict] = []
    settings = TrainerSettings(device=args.device, progress=False, latency_tracking=False,
                               epoch_callback=records.append)  # fmt: skip
    started = time.perf_counter()
    train_stages(
        model, [_stage(args)],
        make_loader(CachedImageDataset(train[0], train[1], train=True, preprocessing=args.size),
                    args.batch, shuffle=True, seed=0, **options),
        make_loader(CachedImageDataset(val[0], val[1]), args.batch, shuffle=False, seed=0,
                    **options),
        settings,
    )  # fmt: skip
    return records[-1]["seconds"], time.perf_counter() - started


def distributed(train, val, nproc: int, args) -> tuple[float, float]:
    params = DistributedParams(nproc_per_node=nproc)
    plan = plan_workers(params, device=args.device)
    settings = TrainerSettings(device=args.device, progress=False, latency_tracking=False)
    job = ClassicalJob(config=_config(args), stages=[_stage(args)], settings=settings,
                       batch_size=args.batch, augment=None, num_workers=args.workers,
                       train_grades=train[1], val_grades=val[1], fingerprint="")  # fmt: skip
    if args.device == "cpu":  # the same cores, shared out among the workers
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    started = time.perf_counter()
    _checkpoint, history = train_classical_ddp(plan, job, train[0], val[0])
    wall = time.perf_counter() - started
    os.environ.pop("OMP_NUM_THREADS", None)
    return history[-1]["history"][-1]["seconds"], wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--encoder", default="test_resnet")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64, help="the global batch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", default=0, help="DataLoader workers per process (int or auto)")
    args = parse_args(parser, argv, nproc=[1], size=32, images=32, batch=16, epochs=1)
    args.workers = args.workers if args.workers == "auto" else int(args.workers)
    logging.basicConfig(level=logging.WARNING)
    rng = np.random.default_rng(0)
    val_count = max(args.batch, args.images // 8)
    with tempfile.TemporaryDirectory() as folder:
        caches = {}
        for split, count in (("train", args.images), ("val", val_count)):
            path = Path(folder) / f"{split}.npy"
            np.save(path, rng.integers(0, 256, (count, args.size, args.size, 3), dtype=np.uint8))
            caches[split] = (np.load(path, mmap_mode="r"), rng.integers(0, 5, count))
        train, val = caches["train"], caches["val"]
        per_epoch = len(train[0]) + len(val[0])
        runs = {"single": single_process(train, val, args)}
        for nproc in args.nproc:
            runs[f"ddp_{nproc}"] = distributed(train, val, nproc, args)
    print("command:", " ".join([sys.executable, *sys.argv]))
    device = torch.device(args.device)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, device {device}"
          + (f" ({torch.cuda.get_device_name(device)}, {torch.cuda.device_count()} GPU(s))"
             if device.type == "cuda" else "")
          + f", torch {torch.__version__}, encoder {args.encoder} at {args.size} px, "
          f"global batch {args.batch}, {per_epoch} images per epoch")  # fmt: skip
    results = {}
    base = per_epoch / runs["single"][0]
    for name, (epoch_seconds, wall) in runs.items():
        value = per_epoch / epoch_seconds
        results[name] = {"images_per_s": value, "last_epoch_s": epoch_seconds, "wall_s": wall}
        print(f"{name:>8}: {value:9.1f} images/s (last epoch {epoch_seconds:.2f} s, "
              f"{value / base:.2f}x single; whole run {wall:.1f} s)")  # fmt: skip
    print(json.dumps({"ddp": results, "device": str(device), "images": args.images}))


if __name__ == "__main__":
    main()
