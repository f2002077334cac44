"""CPU latency per photograph: onnxruntime against torch, on the same model, in one run.

Loads a trained model (``--output-dir``, default the bundled sample's run), exports it to ONNX in
memory (the ``export`` pipeline's code), and times the model part of grading one image at a time
(batch 1, preprocessed tensors, so decoding is left out of both) with each engine, interleaved.
Prints the median and 95th percentile in milliseconds and their ratio, and a last line of JSON.

    .venv/bin/python benchmarks/inference_latency.py [--output-dir data/06_models/trained_model]
        [--images 50] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _smoke import parse_args
from qsight_pipeline.inference import load_model
from qsight_pipeline.inference.export import INPUT_NAME, export_onnx_bytes
from qsight_pipeline.inference.predict import decode, normalise

SAMPLE = Path("data/01_raw/sample/resized_train/resized_train")


def _inputs(folder: Path, count: int, preprocessing: dict) -> list[np.ndarray]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    batch = normalise(np.stack([decode(p, preprocessing) for p in paths[:count]]), preprocessing)
    return [batch[i : i + 1].numpy() for i in range(len(batch))]


def _time(run, images: list[np.ndarray]) -> list[float]:
    times = []
    for image in images:
        start = time.perf_counter()
        run(image)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="data/06_models/trained_model")
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both engines")
    parser.add_argument("--image-dir", default=str(SAMPLE))
    args = parse_args(parser, argv, images=4, repeats=1)
    logging.basicConfig(level=logging.WARNING)
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    loaded = load_model(args.output_dir, device="cpu")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(export_onnx_bytes(loaded), options, providers=["CPUExecutionProvider"])
    images = _inputs(Path(args.image_dir), args.images, loaded.preprocessing)

    def run_torch(image: np.ndarray) -> None:
        with torch.no_grad():
            loaded.graph(torch.from_numpy(image))

    def run_onnx(image: np.ndarray) -> None:
        session.run(None, {INPUT_NAME: image})

    run_torch(images[0]), run_onnx(images[0])  # warm-up: first calls allocate
    samples: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
    for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
        samples["torch"] += _time(run_torch, images)
        samples["onnxruntime"] += _time(run_onnx, images)
    stats = {
        engine: {"median_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95)), "n": len(v)}
        for engine, v in samples.items()
    }
    speedup = stats["torch"]["median_ms"] / stats["onnxruntime"]["median_ms"]
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}; {args.threads} thread(s)")
    print(f"model: {loaded.model_info.get('encoder_name')} at {loaded.preprocessing['image_size']} px, "
          f"quantum head {'on' if loaded.model.quantum_head is not None else 'off'}")
    for engine, values in stats.items():
        print(f"{engine:>12}: median {values['median_ms']:.2f} ms/image, p95 {values['p95_ms']:.2f} "
              f"ms ({values['n']} runs)")
    print(f"onnxruntime is {speedup:.2f}x torch (median)")
    print(json.dumps({"stats": stats, "speedup": speedup}))


if __name__ == "__main__":
    main()
