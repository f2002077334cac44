"""Ingestion throughput on 1024-px JPEGs: a plain full decode and resize vs the project's decoder.

    .venv/bin/python benchmarks/ingestion.py --images 100 --size 224

Writes ``--images`` synthetic 1024 x 1024 fundus JPEGs into a temporary folder, then times, on the
same files in the same run:

- plain: ``Image.open(...).convert("RGB").resize(...)``, decoding every pixel first;
- project: ``qsight_pipeline.data.image_cache.load_image`` (the one pixel path: every pixel
  decoded, EXIF orientation, 8-bit RGB, bicubic letterbox), one thread, so the ratio is the cost
  of those steps over a plain decode (the reduced-scale ``draft`` decode it used before is
  compared with it in ``benchmarks/pixel_path.py``);
- project cache: ``build_image_cache`` with its default decoding threads, as the pipeline runs it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _smoke import parse_args
from _timing import images_per_second
from qsight_pipeline.data.image_cache import build_image_cache, default_workers, load_image
from qsight_pipeline.data.sample import draw_fundus, make_anatomy


def write_sources(folder: Path, count: int, seed: int) -> list[Path]:
    # Drawing is slow at 1024 px, so a few distinct pictures are re-encoded with small changes;
    # every file is still a separate full-size JPEG to decode.
    rng = np.random.default_rng(seed)
    bases = [
        np.asarray(draw_fundus(make_anatomy(rng), grade, "right", 1024, rng))
        for grade in range(min(count, 5))
    ]
    paths = []
    for index in range(count):
        pixels = bases[index % len(bases)].astype(np.int16) + int(rng.integers(-6, 7))
        path = folder / f"{index}_right.jpeg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def plain_decode(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=224, help="cache side length (image_size)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many passes")
    parser.add_argument("--seed", type=int, default=0)
    args = parse_args(parser, images=4, size=64, repeats=1)

    with tempfile.TemporaryDirectory(prefix="qsight_bench_") as folder:
        paths = write_sources(Path(folder), args.images, args.seed)
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        plain = images_per_second(plain_decode, paths, args.size, args.repeats)
        project = images_per_second(load_image, paths, args.size, args.repeats)
        start = time.perf_counter()
        build_image_cache(paths, args.size)
        cache = len(paths) / (time.perf_counter() - start)

    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"{args.images} JPEGs, 1024x1024, {megabytes:.1f} MB; cache size {args.size} px")
    print(f"plain (full decode, then resize):  {plain:8.1f} images/s")
    print(f"project (full decode + letterbox): {project:8.1f} images/s")
    print(f"ratio project / plain:             {project / plain:8.2f}x")
    print(f"project cache, {default_workers()} threads:        {cache:8.1f} images/s")
    print(json.dumps({"images": args.images, "size": args.size, "megabytes": round(megabytes, 1),
                      "plain_images_per_s": plain, "project_images_per_s": project,
                      "ratio": project / plain, "project_cache_images_per_s": cache,
                      "cache_threads": default_workers()}))


if __name__ == "__main__":
    main()
