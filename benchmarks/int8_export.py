"""int8 ONNX export against the float one: size, CPU latency, agreement of grades and decisions.

Loads a trained model (``--output-dir``), exports it to ONNX in memory and quantises it with the
``export`` pipeline's code (``export.quantize: int8``: onnxruntime static quantisation calibrated
on the training image cache; the validation image cache checks it and keeps float the layers that
move the grades, unless ``--unchecked``), then runs
both on photographs (``--images`` from the test split of the run's manifest when there is one,
else the bundled sample) at batch 1 with one thread, interleaved. Reports both sizes, the median
latency, the share of photographs with the same grade (argmax) and the same referral decision,
the largest difference of any ensemble probability, and the operators left in float. Last line:
JSON.

    .venv/bin/python benchmarks/int8_export.py [--output-dir data/06_models/trained_model]
        [--images 100] [--repeats 3] [--dynamic] [--unchecked] [--agreement 0.99]
        [--max-difference 0.02]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _smoke import parse_args
from qsight_pipeline.inference import load_model
from qsight_pipeline.inference.export import INPUT_NAME, export_onnx_bytes, quantize_int8
from qsight_pipeline.inference.graph import OUTPUT_NAMES
from qsight_pipeline.inference.predict import decode, normalise

SAMPLE = Path("data/01_raw/sample/resized_train/resized_train")


def _paths(count: int) -> list[Path]:
    manifest = Path("data/03_primary/manifest.csv")
    if manifest.is_file():
        table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        paths = [Path(p) for p in table.loc[table["split"] == "test", "path"] if Path(p).is_file()]
        if paths:
            return paths[:count]
    return sorted(p for p in SAMPLE.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))[:count]


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="data/06_models/trained_model")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dynamic", action="store_true", help="dynamic quantisation (no calibration)")
    parser.add_argument("--unchecked", action="store_true",
                        help="no accuracy check on the validation cache (every layer int8)")
    parser.add_argument("--agreement", type=float, default=0.99)
    parser.add_argument("--max-difference", type=float, default=0.02)
    args = parse_args(parser, images=4, repeats=1)
    logging.basicConfig(level=logging.ERROR)

    loaded = load_model(args.output_dir)
    float_bytes = export_onnx_bytes(loaded)
    cache = Path("data/05_model_input/image_cache_train.npy")
    calibration = np.load(cache, mmap_mode="r") if cache.is_file() and not args.dynamic else None
    val_cache = Path("data/05_model_input/image_cache_val.npy")
    check = None if args.unchecked or not val_cache.is_file() else np.load(val_cache, mmap_mode="r")
    start = time.perf_counter()
    int8_bytes, report = quantize_int8(
        float_bytes, calibration, loaded.preprocessing, check,
        {"agreement": args.agreement, "max_difference": args.max_difference},
    )
    quantise_s = time.perf_counter() - start
    if int8_bytes is None:
        raise SystemExit(f"int8 quantisation failed: {report['error']}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sessions = {name: ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
                for name, data in (("float", float_bytes), ("int8", int8_bytes))}
    paths = _paths(args.images)
    size = int(loaded.preprocessing["image_size"])
    batch = normalise(np.stack([decode(p, loaded.preprocessing) for p in paths]),
                      loaded.preprocessing).numpy()
    outputs = {name: session.run(None, {INPUT_NAME: batch}) for name, session in sessions.items()}
    probs = {name: out[OUTPUT_NAMES.index("ensemble_probs")] for name, out in outputs.items()}
    referable = {name: out[OUTPUT_NAMES.index("referable_probability")] for name, out in outputs.items()}
    threshold = loaded.referral.get("threshold", 0.5)
    times: dict[str, list[float]] = {"float": [], "int8": []}
    for _ in range(args.repeats):
        for i in range(len(batch)):
            for name, session in sessions.items():
                start = time.perf_counter()
                session.run(None, {INPUT_NAME: batch[i : i + 1]})
                times[name].append((time.perf_counter() - start) * 1000.0)
    result = {
        "images": len(paths),
        "image_size": size,
        "encoder": loaded.model_info.get("encoder_name"),
        "size_mb": {"float": len(float_bytes) / 1e6, "int8": len(int8_bytes) / 1e6},
        "median_ms": {name: statistics.median(values) for name, values in times.items()},
        "grade_agreement": float(np.mean(probs["float"].argmax(1) == probs["int8"].argmax(1))),
        "referral_agreement": float(np.mean((referable["float"] >= threshold) == (referable["int8"] >= threshold))),
        "max_probability_difference": float(np.abs(probs["float"] - probs["int8"]).max()),
        "method": report["method"],
        "quantise_s": quantise_s,
        "check": report.get("check"),
        "left_float": [entry["node"] for entry in report["left_float"]],
        "machine": f"{platform.machine()}, onnxruntime {ort.__version__}, 1 thread",
    }
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(report["method"] + (f"; checked on {report['check']['pictures']} validation pictures, "
                              f"{len(report['check']['kept_float'])} of "
                              f"{report['check'].get('quantisable_nodes', 'the')} layers kept float"
                              if report.get("check") else "; unchecked"))
    print(f"quantisation took {quantise_s:.1f} s")
    print(f"model.onnx {result['size_mb']['float']:.2f} MB, model.int8.onnx {result['size_mb']['int8']:.2f} MB")
    print(f"median latency: float {result['median_ms']['float']:.2f} ms, int8 {result['median_ms']['int8']:.2f} ms")
    print(f"grades agree on {100 * result['grade_agreement']:.1f}% of {len(paths)} photographs; referral on "
          f"{100 * result['referral_agreement']:.1f}%; largest probability difference "
          f"{result['max_probability_difference']:.4f}")
    print(f"left in float: {', '.join(result['left_float']) or 'none'}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
