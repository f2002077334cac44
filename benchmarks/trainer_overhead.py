"""What the project's trainer costs over a minimal hand-written PyTorch loop, per classical epoch.

Both run the same model (the demo's ``test_resnet`` encoder, built from the same seed), the same
batches (one loader per run with the same seeded generator), the same losses (cross-entropy of
heads A and B plus the ensemble's NLL, class-weighted), AdamW, gradient clipping at 1.0, a
training pass and a validation pass. The trainer adds what a user gets from it: per-head metrics
and QWK, ensemble weights and uncertainty, the epoch record, the best-epoch copy of the weights,
and, when on, per-part latency timing. Runs are interleaved and the medians compared.

    .venv/bin/python benchmarks/trainer_overhead.py [--images 256] [--size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from _smoke import parse_args
from qsight_pipeline.data.loaders import class_counts, loader_options, make_loader
from qsight_pipeline.data.torch_data import CachedImageDataset
from qsight_pipeline.models.hybrid import ModelConfig, build_model
from qsight_pipeline.training.trainer import TrainerSettings, train_stages

STAGE = {"name": "classical", "num_epochs": 1, "learning_rate": 1e-3, "patience": 0,
         "active_mask": [1, 1, 0]}  # fmt: skip


def fresh_model(size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(
        ModelConfig.from_params(
            {"encoder_type": "resnet", "encoder_name": "test_resnet", "pretrained": False,
             "compressed_dim": 64}, None, size,
        )
    )  # fmt: skip


def loaders(images: np.ndarray, grades: np.ndarray, batch: int, device: torch.device):
    options = loader_options(0, device)  # pinned memory on CUDA, as the pipeline loads
    train = CachedImageDataset(images, grades, train=True, augment={}, preprocessing=images.shape[1])
    val = CachedImageDataset(images, grades, train=False, preprocessing=images.shape[1])
    return (make_loader(train, batch, shuffle=True, seed=0, **options),
            make_loader(val, batch, shuffle=False, seed=0, **options))  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def project_epoch(images, grades, batch: int, latency: bool, device: torch.device) -> float:
    model = fresh_model(images.shape[1])
    train, val = loaders(images, grades, batch, device)
    settings = TrainerSettings(seed=0, progress=False, device=str(device), latency_tracking=latency)
    started = time.perf_counter()
    train_stages(model, [STAGE], train, val, settings)
    _sync(device)
    return time.perf_counter() - started


def minimal_epoch(images, grades, batch: int, device: torch.device) -> float:
    """The loop a user would write by hand for the same model and settings (on CUDA with the
    trainer's defaults there: bf16 autocast and channels-last)."""
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    layout = torch.channels_last if cuda else torch.contiguous_format
    model = fresh_model(images.shape[1]).to(device, memory_format=layout)
    train, val = loaders(images, grades, batch, device)
    counts = class_counts(grades)
    weights = torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32, device=device)
    parts = [model.encoder, model.compression, model.head_a, model.head_b, model.ensemble]
    params = [p for part in parts for p in part.parameters()]
    optimizer = torch.optim.AdamW(params, lr=STAGE["learning_rate"])
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    started = time.perf_counter()
    model.train()
    for item in train:
        x = item["image"].to(device, non_blocking=True).contiguous(memory_format=layout)
        y = item["grade"].to(device, non_blocking=True)
        with autocast:
            out = model(images=x, active_mask=(1, 1, 0))
        loss = F.cross_entropy(out["logits_head_a"].float(), y, weight=weights)
        loss = loss + F.cross_entropy(out["logits_head_b"].float(), y, weight=weights)
        loss = loss + F.nll_loss(out["fused_probs"].float().clamp_min(1e-8).log(), y, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    model.eval()
    with torch.no_grad(), autocast:
        for item in val:
            x = item["image"].to(device, non_blocking=True).contiguous(memory_format=layout)
            model(images=x, active_mask=(1, 1, 0))
    _sync(device)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parse_args(parser, argv, images=32, size=32, batch=16, repeats=1)
    device = torch.device(args.device)
    logging.basicConfig(level=logging.WARNING)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)
    grades = rng.integers(0, 5, args.images)

    times: dict[str, list[float]] = {"minimal": [], "project": [], "project_no_latency": []}
    for _ in range(args.repeats):  # interleaved, so background load hits all alike
        times["minimal"].append(minimal_epoch(images, grades, args.batch, device))
        times["project"].append(project_epoch(images, grades, args.batch, True, device))
        times["project_no_latency"].append(project_epoch(images, grades, args.batch, False, device))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print("command:", " ".join([sys.executable, *sys.argv]))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))  # fmt: skip
    for name, value in medians.items():
        print(f"{name:>20}: {value:.3f} s per epoch (median of {args.repeats})")
    ratio = medians["project"] / medians["minimal"]
    ratio_off = medians["project_no_latency"] / medians["minimal"]
    print(f"project / minimal: {ratio:.3f} (latency on), {ratio_off:.3f} (latency off); target <= 1.05")
    print(json.dumps({"trainer_overhead": {**medians, "ratio": ratio, "ratio_no_latency": ratio_off}}))


if __name__ == "__main__":
    main()
