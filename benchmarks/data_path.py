"""Images per second along the data path: cache + loader, augmentation, and a full training step.

1. ``loader``: the memory-mapped image cache through ``CachedImageDataset`` and a DataLoader, no
   augmentation (decode-free: the cache is uint8 already), to float tensors on the device.
2. ``augment_cpu``: the same with the per-sample torchvision augmentation in the loader.
3. ``augment_device``: the loader hands over uint8 batches and ``BatchAugmentation`` flips,
   rotates and jitters each image of the batch on the device (``augmentation.on_device``).
4. ``train_step``: forward + backward + AdamW step of the demo model on loader batches (the
   project's trainer, one epoch, no validation cost counted: images/s of the training pass).

On a CPU "device" means the same cores, so 3 measures the batched kernels against per-image
ones; on a GPU it also frees the loader processes. Run it on the GPU you train on:

    .venv/bin/python benchmarks/data_path.py [--images 512] [--size 128] [--workers 0] [--device cpu]
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
from qsight_pipeline.data.device_augment import BatchAugmentation
from qsight_pipeline.data.loaders import loader_options, make_loader
from qsight_pipeline.data.torch_data import CachedImageDataset
from qsight_pipeline.models.hybrid import ModelConfig, build_model
from qsight_pipeline.training.trainer import TrainerSettings, train_stages

AUGMENT = {"on_device": False}  # the defaults of the augmentation block


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(loader, device: torch.device, transform=None) -> float:
    count, started = 0, time.perf_counter()
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        if transform is not None:
            images = transform(images, True)
        count += images.shape[0]
    _sync(device)
    return count / (time.perf_counter() - started)


def train_step_rate(cache: np.ndarray, grades: np.ndarray, args, device: torch.device) -> float:
    torch.manual_seed(0)
    model = build_model(
        ModelConfig.from_params({"encoder_type": "resnet", "encoder_name": "test_resnet",
                                 "pretrained": False}, None, args.size)
    )  # fmt: skip
    dataset = CachedImageDataset(cache, grades, train=True, augment=AUGMENT, preprocessing=args.size)
    options = loader_options(args.workers, device)
    train = make_loader(dataset, args.batch, shuffle=True, seed=0, **options)
    val = make_loader(CachedImageDataset(cache[: args.batch], grades[: args.batch]), args.batch,
                      shuffle=False, seed=0)  # fmt: skip
    records: list[dict] = []
    settings = TrainerSettings(device=str(device), progress=False, latency_tracking=False,
                               epoch_callback=records.append)  # fmt: skip
    stage = {"name": "classical", "num_epochs": 1, "learning_rate": 1e-3, "active_mask": [1, 1, 0]}
    started = time.perf_counter()
    train_stages(model, [stage], train, val, settings)
    return len(cache) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", default="auto", help="DataLoader workers (int or auto)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parse_args(parser, argv, images=64, size=32, batch=16)
    args.workers = args.workers if args.workers == "auto" else int(args.workers)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    grades = rng.integers(0, 5, args.images)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cache.npy"
        np.save(path, rng.integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8))
        cache = np.load(path, mmap_mode="r")  # as the pipeline reads it
        options = loader_options(args.workers, device)

        def loader(augment, on_device=False):
            settings = None if augment is None else {**AUGMENT, "on_device": on_device}
            dataset = CachedImageDataset(cache, grades, train=augment is not None,
                                         augment=settings, preprocessing=args.size)  # fmt: skip
            return make_loader(dataset, args.batch, shuffle=True, seed=0, **options)

        results["loader"] = images_per_second(loader(None), device)
        results["augment_cpu"] = images_per_second(loader({}), device)
        results["augment_device"] = images_per_second(
            loader({}, on_device=True), device,
            BatchAugmentation({**AUGMENT, "on_device": True}, args.size),
        )
        results["train_step"] = train_step_rate(cache, grades, args, device)
    print("command:", " ".join([sys.executable, *sys.argv]))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", torch {torch.__version__}, loader {options}")  # fmt: skip
    for name, value in results.items():
        print(f"{name:>15}: {value:10.1f} images/s")
    print(json.dumps({"data_path": results, "device": str(device), "images": args.images,
                      "size": args.size, "batch": args.batch}))  # fmt: skip


if __name__ == "__main__":
    main()
