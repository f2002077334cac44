"""Seconds per epoch with a frozen encoder: embedded once (the embedding table) against run in
every epoch, for RETFound-Green's architecture on the bundled sample, on the CPU.

Both runs train the same model from the same seed — timm's ``vit_small_patch14_reg4_dinov2``,
randomly initialised (nothing is downloaded), compression, heads A and B and the ensemble — with
the same stage (the encoder frozen, no augmentation), on the sample's pictures: 210 for training,
45 for validation, as many as the demo's split has. **Uncached** feeds images, so the frozen encoder runs
on every picture in every epoch; **cached** embeds each picture once (``training.embedding_cache``,
timed apart) and trains from the rows. The figure is the mean of the epochs after the first.

    .venv/bin/python benchmarks/frozen_encoder_cache.py [--image-size 224] [--epochs 3] [--threads N]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _smoke import parse_args
from qsight_pipeline.data.image_cache import picture
from qsight_pipeline.data.loaders import make_loader
from qsight_pipeline.data.torch_data import CachedImageDataset
from qsight_pipeline.models.hybrid import ModelConfig, build_model
from qsight_pipeline.training.embedding_cache import EmbeddingDataset, embed
from qsight_pipeline.training.trainer import TrainerSettings, train_stages

SAMPLE = Path("data/01_raw/sample/resized_train")
ENCODER = "vit_small_patch14_reg4_dinov2"


def sample_pictures(preprocessing: dict, count: int) -> tuple[np.ndarray, np.ndarray]:
    with (SAMPLE / "trainLabels.csv").open() as handle:
        grades = {row["image"]: int(row["level"]) for row in csv.DictReader(handle)}
    paths = sorted((SAMPLE / "resized_train").glob("*.jpeg"))[:count]
    pictures = np.stack([picture(path, preprocessing) for path in paths])
    return pictures, np.array([grades[path.stem] for path in paths])


def fresh_model(image_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig.from_params(
        {"encoder_type": "vit", "encoder_name": ENCODER, "pretrained": False, "compressed_dim": 64},
        None, image_size,
    )
    return build_model(config)


def stage(epochs: int) -> dict:
    return {"name": "classical", "num_epochs": epochs, "learning_rate": 1e-3, "patience": 0,
            "active_mask": [1, 1, 0],
            "trainable": ["compression", "head_a", "head_b", "ensemble"]}  # fmt: skip


def epoch_seconds(model, loaders, epochs: int, batch: int) -> list[float]:
    settings = TrainerSettings(seed=0, progress=False, device="cpu", latency_tracking=False,
                               batch_size=batch)
    history = train_stages(model, [stage(epochs)], *loaders, settings)[0]["history"]
    return [record["seconds"] for record in history]


def run(args) -> dict:
    image_size, epochs, batch, train = args.image_size, args.epochs, args.batch_size, args.train_images
    model = fresh_model(image_size)
    preprocessing = model.config.preprocessing
    pictures, grades = sample_pictures(preprocessing, train + args.val_images)
    splits = {"train": slice(0, train), "val": slice(train, train + args.val_images)}
    images = {name: CachedImageDataset(pictures[part], grades[part], preprocessing=preprocessing)
              for name, part in splits.items()}  # fmt: skip
    loaders = [make_loader(images["train"], batch, shuffle=True, seed=0),
               make_loader(images["val"], batch, shuffle=False, seed=0)]  # fmt: skip
    uncached = epoch_seconds(model, loaders, epochs, batch)

    model = fresh_model(image_size)
    started = time.perf_counter()
    rows = {name: embed(model.encoder, make_loader(images[name], batch, shuffle=False, seed=0),
                        "cpu", name) for name in splits}  # fmt: skip
    embedding = time.perf_counter() - started
    tables = [EmbeddingDataset(rows[name], grades[splits[name]]) for name in splits]
    loaders = [make_loader(tables[0], batch, shuffle=True, seed=0),
               make_loader(tables[1], batch, shuffle=False, seed=0)]  # fmt: skip
    cached = epoch_seconds(model, loaders, epochs, batch)
    after_first = {"uncached": statistics.mean(uncached[1:]), "cached": statistics.mean(cached[1:])}
    return {
        "encoder": ENCODER, "image_size": image_size, "train_images": train,
        "val_images": args.val_images,
        "epochs": epochs, "batch_size": batch, "torch_threads": torch.get_num_threads(),
        "uncached_epoch_seconds": uncached, "cached_epoch_seconds": cached,
        "embedding_once_seconds": embedding,
        "seconds_per_epoch_after_first": after_first,
        "ratio": after_first["uncached"] / after_first["cached"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224,
                        help="side in pixels (RETFound-Green's own is 392: about 3x slower)")
    parser.add_argument("--epochs", type=int, default=3, help="at least 2")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--train-images", type=int, default=210, help="the demo's training split")
    parser.add_argument("--val-images", type=int, default=45, help="the demo's validation split")
    args = parse_args(parser, argv, image_size=28, epochs=2, batch_size=8, train_images=16,
                      val_images=8)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the figure is of the epochs after the first)")
    result = run(args)
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
          f"{result['torch_threads']} torch threads, torch {torch.__version__}")
    per_epoch = result["seconds_per_epoch_after_first"]
    print(f"{ENCODER} at {args.image_size} px, frozen, {args.train_images} train + "
          f"{args.val_images} val pictures, "
          f"batch {args.batch_size}, epochs 2-{args.epochs}:")
    print(f"  uncached (encoder every epoch): {per_epoch['uncached']:.2f} s/epoch")
    print(f"  cached (embedding table):       {per_epoch['cached']:.3f} s/epoch "
          f"(+ {result['embedding_once_seconds']:.1f} s to embed once)")
    print(f"  ratio: {result['ratio']:.0f}x faster per epoch")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
