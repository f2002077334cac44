"""Ingestion throughput before and after the one pixel path (JPEG ``draft`` decode vs full decode).

    .venv/bin/python benchmarks/pixel_path.py --size 128 --photographs 1000

Two sets of JPEGs, each decoded into pictures of ``--size`` px, one thread, best of ``--repeats``:

- the bundled sample (``data/01_raw/sample``, 300 JPEGs of 256 px);
- ``--photographs`` synthetic 1024 x 1024 fundus JPEGs: ``--distinct`` eyes drawn by the sample
  generator (``qsight_pipeline.data.sample.generate_sample``, in ``--workers`` processes), each
  saved again with a small brightness shift until there are enough, every one a separate
  full-size file (``--keep DIR`` keeps them for the next run: drawing costs far more than
  decoding).

For each: **before**, the decoder this project had until the one pixel path (Pillow ``draft``
picks the JPEG's reduced DCT scale, then a bicubic letterbox; reproduced here as it was), and
**after**, ``load_image`` (every pixel decoded, then the same bicubic letterbox: the one path
with no crop), then ``build_image_cache`` with its default threads as ingestion runs it. It also
reports how far the draft pictures are from the full decode (max and mean absolute difference
in grey levels, and the share of pictures that differ at all): the bound a kept draft decode
would have had to meet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from _smoke import parse_args
from _timing import images_per_second
from qsight_pipeline.data.image_cache import (
    build_image_cache,
    default_workers,
    letterbox,
    load_image,
    to_rgb8,
)
from qsight_pipeline.data.sample import generate_sample

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "01_raw" / "sample"


def draft_picture(path: Path, size: int) -> np.ndarray:
    """The decoder before the one pixel path: a JPEG decoded at reduced scale (``draft``)."""
    with Image.open(path) as image:
        orientation = image.getexif().get(0x0112, 1)
        width, height = image.size
        upright = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        scale = size / max(upright)
        target = (max(1, round(upright[0] * scale)), max(1, round(upright[1] * scale)))
        stored = target if upright == image.size else (target[1], target[0])
        if image.mode in ("RGB", "L", "YCbCr", "CMYK"):
            image.draft(image.mode if image.mode == "CMYK" else "RGB", stored)
        image = to_rgb8(ImageOps.exif_transpose(image))
        if image.size != target:
            image = image.resize(target, Image.Resampling.BICUBIC, reducing_gap=None)
        return letterbox(image, size)


def _generate(job: tuple[str, int, int]) -> list[str]:
    folder, patients, seed = job
    table = generate_sample(folder, patients=patients, seed=seed, size=1024)
    return [str(Path(folder) / path) if not Path(path).is_absolute() else str(path)
            for path in table["path"]]


def synthetic_photographs(folder: Path, count: int, workers: int, distinct: int) -> list[Path]:
    """``count`` 1024-px JPEGs: ``distinct`` eyes drawn by the sample generator (two per patient;
    drawing one takes seconds), each then saved again as separate files with a small brightness
    shift (quality 90) until there are ``count``. Reused when ``folder`` already holds them."""
    copies = folder / "copies"
    found = sorted(copies.glob("*.jpeg"))
    if len(found) >= count:
        return found[:count]
    drawn = sorted((folder / "drawn").rglob("*.jpeg"))
    if len(drawn) < distinct:
        patients = (distinct - len(drawn) + 1) // 2
        chunks = [(str(folder / "drawn" / f"part{len(drawn)}_{i}"), len(part), 1000 + len(drawn) + i)
                  for i, part in enumerate(np.array_split(np.arange(patients), workers)) if len(part)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_generate, chunks))
        drawn = sorted((folder / "drawn").rglob("*.jpeg"))
    copies.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        with Image.open(drawn[index % distinct]) as image:
            pixels = np.asarray(image.convert("RGB")).astype(np.int16) + int(rng.integers(-6, 7))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            copies / f"{index:04d}.jpeg", quality=90)
    return sorted(copies.glob("*.jpeg"))[:count]



def measure(name: str, paths: list[Path], size: int, repeats: int) -> dict:
    before = images_per_second(draft_picture, paths, size, repeats)
    after = images_per_second(load_image, paths, size, repeats)
    start = time.perf_counter()
    build_image_cache(paths, size)
    cache = len(paths) / (time.perf_counter() - start)
    differences = [np.abs(draft_picture(p, size).astype(int) - load_image(p, size).astype(int))
                   for p in paths[: min(len(paths), 300)]]
    return {
        "set": name, "images": len(paths), "size": size,
        "before_draft_images_per_s": before, "after_full_images_per_s": after,
        "after_over_before": after / before, "after_cache_images_per_s": cache,
        "draft_vs_full_max_abs": int(max(d.max() for d in differences)),
        "draft_vs_full_mean_abs": float(np.mean([d.mean() for d in differences])),
        "draft_pictures_that_differ": float(np.mean([d.any() for d in differences])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="picture side (run.image_size)")
    parser.add_argument("--photographs", type=int, default=1000, help="synthetic 1024-px JPEGs")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many passes")
    parser.add_argument("--distinct", type=int, default=100, help="eyes drawn by the generator")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="generator processes")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the synthetic set")
    args = parse_args(parser, photographs=4, distinct=2, repeats=1)

    sample = sorted(SAMPLE.rglob("*.jpeg"))[: 8 if args.smoke else None]
    rows = [measure("bundled sample (256 px JPEGs)", sample, args.size, args.repeats)]
    with tempfile.TemporaryDirectory(prefix="qsight_bench_") as scratch:
        folder = args.keep or Path(scratch)
        photographs = synthetic_photographs(folder, args.photographs, args.workers, args.distinct)
        rows.append(measure("synthetic 1024 px JPEGs", photographs, args.size, args.repeats))

    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; cache threads {default_workers()}")
    for row in rows:
        print(f"{row['set']}: {row['images']} images into {row['size']} px pictures, one thread")
        print(f"  before (draft decode + resize):     {row['before_draft_images_per_s']:8.1f} images/s")
        print(f"  after (full decode + resize):       {row['after_full_images_per_s']:8.1f} images/s "
              f"({row['after_over_before']:.2f}x)")
        print(f"  after, build_image_cache threads:   {row['after_cache_images_per_s']:8.1f} images/s")
        print(f"  draft vs full pictures: max |diff| {row['draft_vs_full_max_abs']} grey levels, "
              f"mean {row['draft_vs_full_mean_abs']:.3f}; "
              f"{100 * row['draft_pictures_that_differ']:.0f}% of pictures differ")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
