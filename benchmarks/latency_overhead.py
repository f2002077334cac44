"""What latency tracking costs the trainer: the same epochs with it on and off.

With ``latency_tracking: false`` the model carries no tracker and nothing is timed, so the
trainer's own overhead must match a run that never had the feature. This script trains the same
tiny model on the same synthetic batches twice per setting, interleaved, and prints the median
seconds per epoch for each setting and their ratio.

    .venv/bin/python benchmarks/latency_overhead.py [--epochs 3] [--images 256] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys

import numpy as np
import torch

from _smoke import parse_args
from qsight_pipeline.data.loaders import make_loader
from qsight_pipeline.data.torch_data import CachedImageDataset
from qsight_pipeline.models.hybrid import ModelConfig, build_model
from qsight_pipeline.training.trainer import TrainerSettings, train_stages


def epoch_seconds(latency: bool, images: np.ndarray, grades: np.ndarray, epochs: int) -> list[float]:
    torch.manual_seed(0)
    model = build_model(
        ModelConfig.from_params(
            {"encoder_type": "resnet", "encoder_name": "test_resnet", "pretrained": False,
             "compressed_dim": 16}, None, images.shape[1],
        )
    )
    dataset = CachedImageDataset(images, grades, train=False, preprocessing=images.shape[1])
    train = make_loader(dataset, 32, shuffle=True, seed=0)
    val = make_loader(dataset, 64, shuffle=False, seed=0)
    records: list[dict] = []
    settings = TrainerSettings(
        seed=0, latency_tracking=latency, progress=False, epoch_callback=records.append
    )
    stage = {"name": "classical", "num_epochs": epochs, "learning_rate": 1e-3, "patience": 0,
             "active_mask": [1, 1, 0]}
    train_stages(model, [stage], train, val, settings)
    return [record["seconds"] for record in records]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parse_args(parser, argv, epochs=1, images=32, size=32, repeats=1)
    logging.basicConfig(level=logging.WARNING)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, args.size, args.size, 3), dtype=np.uint8)
    grades = rng.integers(0, 5, size=args.images)

    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for latency in (False, True):  # interleaved, so drift in machine load hits both
            times[latency] += epoch_seconds(latency, images, grades, args.epochs)
    off = statistics.median(times[False])
    on = statistics.median(times[True])

    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    print(f"{args.images} images of {args.size} px, test_resnet, batch 32, "
          f"{args.epochs} epochs x {args.repeats} repeats per setting")
    print(f"latency_tracking off: {off:.3f} s/epoch (median)")
    print(f"latency_tracking on:  {on:.3f} s/epoch (median)")
    print(f"on / off: {on / off:.3f}")
    print(json.dumps({"seconds_per_epoch_off": off, "seconds_per_epoch_on": on,
                      "ratio_on_over_off": on / off}))


if __name__ == "__main__":
    main()
