"""How much of a heatmap's mass falls on the lesions, for a tiny model trained on the sample.

For each training seed: generate the sample (``generate_sample``, all five grades), train a tiny
CNN on it through the Python API (``train_hybrid_model``, one classical stage), save and load it
(``save_model`` / ``load_model``), then take held-out generated eyes with grade-3 lesions planted
in their left half only. Lesion pixels are where the diseased and the clean twin of the same eye
differ; the share of the map's mass within ``--dilation`` pixels of them is compared with the
area that covers (a map blind to the lesions scores about its area). Measured for the project's
maps (``grad_cam_maps``: HiResCAM, last two stages, grade-vs-No-DR target) and, in the same run,
for the previous method (Grad-CAM on the last stage, the plain grade logit).

    .venv/bin/python benchmarks/heatmap_localisation.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import binary_dilation

from _smoke import parse_args


def train_on_sample(folder: Path, seed: int, args: argparse.Namespace):
    from qsight_pipeline import (
        DatasetConfig,
        TrainingConfig,
        create_dataloaders,
        load_model,
        save_model,
        train_hybrid_model,
    )
    from qsight_pipeline.data.sample import generate_sample

    generate_sample(folder / "sample", patients=args.patients, seed=0, size=args.size)
    train, val, classes = create_dataloaders(DatasetConfig(
        root=folder / "sample", batch_size=16, image_size=args.size, val_fraction=0.2, test_fraction=0.1,
        seed=seed,
    ))
    stage = {"name": "classical", "num_epochs": args.epochs, "learning_rate": 2e-3,
             "patience": args.epochs}
    model, summary = train_hybrid_model(
        train, val, classes,
        config=TrainingConfig(
            stages=[stage], seed=seed, latency_tracking=False,
            model={"encoder_name": "test_resnet", "pretrained": False, "compressed_dim": 16},
        ),
        encoder_type="resnet", quantum_enabled=False,
    )
    return load_model(save_model(model, summary, folder / f"model_{seed}")), summary


def previous_maps(loaded, images: torch.Tensor, grades: list[int]) -> np.ndarray:
    """Grad-CAM on the last stage for the plain grade logit (the method before this change)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from qsight_pipeline.inference.heatmaps import _GatedLogits

    layer = loaded.model.encoder.get_submodule(loaded.model.encoder.feature_info[-1]["module"])
    with GradCAM(model=_GatedLogits(loaded.graph), target_layers=[layer]) as cam:
        return cam(input_tensor=images, targets=[ClassifierOutputTarget(g) for g in grades])


def shares(maps: np.ndarray, masks: list[np.ndarray], dilation: int) -> tuple[float, float]:
    near = [binary_dilation(mask, iterations=dilation) for mask in masks]
    share = np.mean([m[n].sum() / max(m.sum(), 1e-12) for m, n in zip(maps, near, strict=True)])
    return float(share), float(np.mean([n.mean() for n in near]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eyes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--patients", type=int, default=40, help="generated patients to train on")
    parser.add_argument("--size", type=int, default=128, help="image side (px)")
    parser.add_argument("--epochs", type=int, default=10)
    args = parse_args(parser, seeds=[0], eyes=2, patients=20, size=64, epochs=1)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    from qsight_pipeline.inference.heatmaps import grad_cam_maps
    from qsight_pipeline.inference.predict import normalise

    print("command:", " ".join([".venv/bin/python", *sys.argv]))
    print("machine:", platform.machine(), platform.processor() or "", f"torch {torch.__version__}")
    from qsight_pipeline.data.sample import planted_lesion_eye

    eyes = [planted_lesion_eye(100 + i, args.size) for i in range(args.eyes)]
    masks = [lesions for _, lesions in eyes]
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            loaded, summary = train_on_sample(Path(tmp), seed, args)
            seconds = time.perf_counter() - start
        images = normalise(np.stack([image for image, _ in eyes]), loaded.preprocessing)
        with torch.no_grad():
            grades = loaded.graph(images)[0].argmax(dim=1).tolist()
        cell = int(loaded.model.encoder.feature_info[-2]["reduction"])  # finest map cell, pixels
        new = grad_cam_maps(loaded.graph, images, grades)
        old = previous_maps(loaded, images, grades)
        row = {
            "seed": seed, "train_and_save_s": round(seconds, 1), "grades": grades,
            "val_kappa": summary["evaluation"]["val"]["ensemble"]["quadratic_weighted_kappa"],
            "cell_px": cell,
        }
        for name, maps in (("new", new), ("old", old)):
            for label, dilation in (("half_cell", cell // 2), ("one_cell", cell)):
                share, area = shares(maps, masks, dilation)
                row[f"{name}_{label}"] = {"share": round(share, 3), "area": round(area, 3)}
        rows.append(row)
        print(json.dumps(row))
    summary_row = {
        key: {
            "share": round(float(np.mean([r[key]["share"] for r in rows])), 3),
            "share_min": round(float(np.min([r[key]["share"] for r in rows])), 3),
            "area": round(float(np.mean([r[key]["area"] for r in rows])), 3),
        }
        for key in ("new_half_cell", "new_one_cell", "old_half_cell", "old_one_cell")
    }
    print(json.dumps({"seeds": args.seeds, "eyes": args.eyes, **summary_row}))


if __name__ == "__main__":
    main()
