"""What the GPU settings buy: float32 against bf16 autocast, channels-last and ``torch.compile``.

The project's trainer trains the same model (a timm encoder, quantum head off) on the same
batches with four settings, in one run:

1. ``fp32``: ``mixed_precision: false``, ``channels_last: false``;
2. ``bf16``: bf16 autocast (the default on CUDA), NCHW;
3. ``bf16_cl``: bf16 and channels-last (the default on CUDA);
4. ``bf16_cl_compile``: the same through ``torch.compile`` (``compile: true``).

Each setting trains ``--epochs`` epochs; the figure is images/s of the last epoch's training +
validation pass (so compilation, done in the first epoch, is not counted), and the ratio to
``fp32``. On a CPU only the first setting means anything (autocast and channels-last are off
there by default); run it on the GPU you train on:

    python benchmarks/gpu_settings.py --device cuda --encoder resnet50 --size 224 --images 4096
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys

import numpy as np
import torch

from _smoke import parse_args
from qsight_pipeline.data.loaders import loader_options, make_loader
from qsight_pipeline.data.torch_data import CachedImageDataset
from qsight_pipeline.models.hybrid import ModelConfig, build_model
from qsight_pipeline.training.trainer import TrainerSettings, train_stages

SETTINGS = {
    "fp32": {"mixed_precision": False, "channels_last": False},
    "bf16": {"mixed_precision": True, "channels_last": False},
    "bf16_cl": {"mixed_precision": True, "channels_last": True},
    "bf16_cl_compile": {"mixed_precision": True, "channels_last": True, "compile": True},
}


def rate(name: str, images: np.ndarray, grades: np.ndarray, args) -> float:
    torch.manual_seed(0)
    model = build_model(
        ModelConfig.from_params({"encoder_type": args.encoder_type, "encoder_name": args.encoder,
                                 "pretrained": False}, None, args.size)
    )  # fmt: skip
    device = torch.device(args.device)
    options = loader_options(args.workers, device)
    train = make_loader(CachedImageDataset(images, grades, train=True, augment=None,
                                           preprocessing=args.size),
                        args.batch, shuffle=True, seed=0, **options)  # fmt: skip
    val = make_loader(CachedImageDataset(images[: args.batch * 2], grades[: args.batch * 2]),
                      args.batch, shuffle=False, seed=0, **options)  # fmt: skip
    records: list[dict] = []
    settings = TrainerSettings(device=args.device, progress=False, latency_tracking=False,
                               epoch_callback=records.append, **SETTINGS[name])  # fmt: skip
    stage = {"name": "classical", "num_epochs": args.epochs, "learning_rate": 1e-3,
             "patience": 0, "active_mask": [1, 1, 0]}  # fmt: skip
    train_stages(model, [stage], train, val, settings)
    return (len(images) + min(len(images), args.batch * 2)) / records[-1]["seconds"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--encoder", default="resnet50")
    parser.add_argument("--encoder-type", default="resnet", choices=["resnet", "efficientnet", "vit"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--only", nargs="*", choices=list(SETTINGS), default=list(SETTINGS))
    args = parse_args(parser, argv, encoder="test_resnet", size=32, images=32, batch=16, epochs=1, only=["fp32", "bf16_cl"])
    args.workers = args.workers if args.workers == "auto" else int(args.workers)
    logging.basicConfig(level=logging.WARNING)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)
    grades = rng.integers(0, 5, args.images)
    results = {name: rate(name, images, grades, args) for name in args.only}
    print("command:", " ".join([sys.executable, *sys.argv]))
    device = torch.device(args.device)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", torch {torch.__version__}, encoder {args.encoder} at {args.size} px, "
          f"batch {args.batch}")  # fmt: skip
    base = results.get("fp32")
    for name, value in results.items():
        ratio = f"  ({value / base:.2f}x fp32)" if base else ""
        print(f"{name:>16}: {value:10.1f} images/s{ratio}")
    print(json.dumps({"gpu_settings": results, "device": str(device), "encoder": args.encoder,
                      "size": args.size, "batch": args.batch}))  # fmt: skip


if __name__ == "__main__":
    main()
