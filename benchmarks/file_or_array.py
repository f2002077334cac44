"""Does a photograph's grade depend on how it arrives? A trained model's test split, graded from
the JPEG files, from the arrays of their fully decoded pixels and from lossless PNGs of them.

    .venv/bin/python benchmarks/file_or_array.py --output-dir data/06_models/trained_model

Reads ``data/03_primary/manifest.csv`` (``--manifest``) for the test split's files. Prints, for the
array and the PNG against the file, how many photographs change grade, referral or decision and
the largest difference of an ensemble probability. With the one pixel path all three are 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from _smoke import parse_args
from qsight_pipeline.inference import load_model, predict_images


def decoded(path: str) -> np.ndarray:
    """The file's pixels as a user's own reader gives them: every pixel, upright."""
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def compare(reference: list, other: list) -> dict:
    changed = [
        (a.grade, a.refer, a.decision) != (b.grade, b.refer, b.decision)
        for a, b in zip(reference, other, strict=True)
    ]
    difference = max(
        float(np.max(np.abs(np.subtract(a.ensemble_probabilities, b.ensemble_probabilities))))
        for a, b in zip(reference, other, strict=True)
    )
    return {"changed": int(sum(changed)), "max_probability_difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("data/06_models/trained_model"))
    parser.add_argument("--manifest", type=Path, default=Path("data/03_primary/manifest.csv"))
    parser.add_argument("--split", default="test")
    args = parse_args(parser)  # --smoke: the smoke run's own test split is already small

    loaded = load_model(args.output_dir)
    manifest = pd.read_csv(args.manifest)
    paths = manifest.loc[manifest["split"] == args.split, "path"].astype(str).tolist()
    arrays = [decoded(path) for path in paths]
    with tempfile.TemporaryDirectory(prefix="qsight_png_") as folder:
        pngs = []
        for index, array in enumerate(arrays):
            pngs.append(Path(folder) / f"{index}.png")
            Image.fromarray(array).save(pngs[-1])
        files, as_arrays, as_pngs = (predict_images(loaded, inputs, batch_size=16, progress=False)
                                     for inputs in (paths, arrays, pngs))
    result = {"images": len(paths), "array": compare(files, as_arrays), "png": compare(files, as_pngs),
              "preprocessing": loaded.preprocessing}
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}; machine: {platform.machine()}")
    for name in ("array", "png"):
        print(f"{name} vs file: {result[name]['changed']} of {len(paths)} photographs change grade, "
              f"referral or decision; largest ensemble probability difference "
              f"{result[name]['max_probability_difference']:.2e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
