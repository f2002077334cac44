"""What the safety measures cost: the restricted unpickler against plain pickle on a feature cache,
and the lineage digest that ingestion computes over the manifest and the image caches.

    .venv/bin/python benchmarks/artifact_safety.py --images 35000 --dim 64 --cache-mb 512

Prints the command, the machine and the figures, then one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _smoke import parse_args
from qsight_pipeline.files import lineage
from qsight_pipeline.files.safe_pickle import safe_load


def feature_cache(images: int, dim: int) -> dict:
    rng = np.random.default_rng(0)
    cache: dict = {}
    for split, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        n = int(images * share)
        cache[f"{split}_features"] = rng.normal(size=(n, dim)).astype(np.float32)
        cache[f"{split}_labels"] = rng.integers(0, 5, n)
        for head in ("head_a", "head_b"):
            cache[f"{split}_logits_{head}"] = rng.normal(size=(n, 5)).astype(np.float32)
        cache[f"{split}_image_ids"] = [f"{i}_left" for i in range(n)]
    cache["metadata"] = {"model_config": {"compressed_dim": dim}, "lineage": {"classical_id": "x"}}
    cache["post_compression_state"] = {"head_a.0.weight": rng.normal(size=(128, dim)).astype(np.float32)}
    return cache


def best_of(repeats: int, call) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=35000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--cache-mb", type=int, default=512, help="image cache size to digest")
    parser.add_argument("--repeats", type=int, default=3)
    args = parse_args(parser, images=300, cache_mb=4, repeats=1)
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print("machine:", platform.machine(), os.cpu_count(), "CPUs,", platform.python_version())

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "quantum_training_data.pkl"
        path.write_bytes(pickle.dumps(feature_cache(args.images, args.dim), protocol=5))

        def plain() -> None:
            with path.open("rb") as handle:
                pickle.load(handle)

        plain_s = best_of(args.repeats, plain)
        safe_s = best_of(args.repeats, lambda: safe_load(path))
        size_mb = path.stat().st_size / 1e6
    side = 224
    count = max(1, args.cache_mb * 2**20 // (side * side * 3))
    images = np.random.default_rng(1).integers(0, 256, (count, side, side, 3), dtype=np.uint8)
    rows = [(f"{i}_left", str(i), "left", i % 5, f"/data/{i}.jpeg", "train", i) for i in range(count)]
    digest_s = best_of(args.repeats, lambda: lineage.ingestion_id(rows, {"train": images}))
    figures = {
        "feature_cache_mb": round(size_mb, 1),
        "pickle_load_s": round(plain_s, 4),
        "restricted_load_s": round(safe_s, 4),
        "restricted_over_plain": round(safe_s / plain_s, 2),
        "ingestion_digest_images": count,
        "ingestion_digest_mb": round(images.nbytes / 2**20),
        "ingestion_digest_s": round(digest_s, 3),
        "ingestion_digest_mb_per_s": round(images.nbytes / 2**20 / digest_s),
    }
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
