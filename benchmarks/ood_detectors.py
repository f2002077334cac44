"""Which out-of-distribution score? Four detectors on one trained model, chosen on sets the test never uses.

Loads a trained model (``--output-dir``: ``complete_checkpoint.pth`` and the feature cache
``quantum_training_data.pkl``) and the image caches (``--cache-dir``), fits every detector of
``qsight_pipeline.inference.ood`` (Mahalanobis, k-NN, energy, ViM) on the training split's
compressed features and the classical heads' logits, ranks each one's conformal threshold on the
validation split, and scores two families of sets:

- **selection** (what chooses ``gate.ood_detector``; the test never uses them): the validation
  pictures against their copies through the sample generator's shifted camera (near), against
  scikit-image's ``SELECTION_PHOTOGRAPHS`` whole and cropped (far) and against drawn pictures
  (far, seed 1);
- **test** (what ``training_summary.json["gate"]`` reports): the test pictures against their
  shifted-camera copies, ``TEST_PHOTOGRAPHS`` and drawn pictures (seed 0).

Prints AUROC and FPR at 95% TPR per detector and set, the pass rates at each detector's own
conformal threshold, the detector that does best on the selection sets (highest mean AUROC,
then lowest mean FPR), the CPU cost per photograph of each score (batch 1, median of
``--repeats``), and a last line of JSON.

    .venv/bin/python benchmarks/ood_detectors.py [--output-dir data/06_models/trained_model]
        [--cache-dir data/05_model_input] [--repeats 300]
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
from qsight_pipeline.files.safe_files import safe_npy_load
from qsight_pipeline.inference import gate_eval, ood
from qsight_pipeline.inference.loading import load_checkpoint_file, loaded_from_checkpoint


def _load(output_dir: Path):
    checkpoint = load_checkpoint_file(output_dir / "complete_checkpoint.pth")
    checkpoint["model_info"].pop("gates", None)  # the detectors are fitted here, whatever was saved
    return loaded_from_checkpoint(checkpoint, "cpu")


def _outputs(loaded, images: np.ndarray, space: str) -> tuple[np.ndarray, np.ndarray]:
    """``(features, logits)`` of pictures: the compressed features, or the encoder's pooled
    features (before the compression module and its LayerNorm; what the gate now scores)."""
    return gate_eval.model_outputs(loaded, images, space=space)


def _sets(loaded, images: np.ndarray, photographs: tuple[str, ...], seed: int) -> dict[str, np.ndarray]:
    size = int(loaded.preprocessing["image_size"])
    drawn = gate_eval.non_fundus_pictures(max(1, len(images) // 4), size, seed)
    sets = {"near: shifted camera": gate_eval.shifted_camera(images),
            "far: drawn pictures": np.concatenate(list(drawn.values()))}
    pictures = gate_eval.non_fundus_photographs(photographs, size, seed=seed)
    if pictures is not None:
        sets["far: photographs"] = pictures
    return sets


def _family(loaded, params, images: np.ndarray, photographs, seed: int, space: str):
    """Each detector's scores of the clean pictures and of each out-of-distribution set."""
    reference = gate_eval.detector_scores(_outputs(loaded, images, space), params)
    scored = {name: gate_eval.detector_scores(_outputs(loaded, pictures, space), params)
              for name, pictures in _sets(loaded, images, photographs, seed).items()}
    return reference, scored


def _cost_ms(params, features: np.ndarray, logits: np.ndarray, repeats: int) -> dict[str, float]:
    """Median milliseconds of each detector's score of one photograph (batch 1)."""
    costs = {}
    for name, p in params.items():
        detector = ood.get_detector(name)
        times = []
        for index in range(repeats):
            row = index % len(features)
            start = time.perf_counter()
            detector.score(features[row : row + 1], logits[row : row + 1], p)
            times.append((time.perf_counter() - start) * 1000.0)
        costs[name] = float(np.median(times))
    return costs


def _agreement(params, features: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Largest difference between the gate's scores and pytorch-ood's on the same features."""
    try:
        from pytorch_ood.detector import KNN, EnergyBased  # lazy: the inference extra
    except ImportError:
        return {}
    bank = np.asarray(params["knn"]["bank"])
    theirs = KNN(None, k=int(params["knn"]["k"])).fit_features(torch.tensor(bank), torch.zeros(len(bank)))
    knn = ood.get_detector("knn").score(features, logits, params["knn"])
    energy = ood.get_detector("energy").score(features, logits, params["energy"])
    return {"knn": float(np.abs(knn - theirs.predict_features(torch.tensor(features)).numpy()).max()),
            "energy": float(np.abs(energy - EnergyBased.score(torch.tensor(logits)).numpy()).max())}


def _print_table(title: str, results: dict, thresholds: dict, reference: dict, scored: dict) -> None:
    sets = list(next(iter(results.values())))
    print(f"\n{title}")
    print(f"{'detector':<12}" + "".join(f"{s[:22]:>24}" for s in sets) + f"{'clean pass':>12}" + f"{'far flagged':>12}")
    for name, by_set in results.items():
        cells = "".join(f"{by_set[s]['auroc']:>11.3f} / {by_set[s]['fpr_at_95_tpr']:<10.3f}" for s in sets)
        passing = float(np.mean(reference[name] <= thresholds[name]))
        far = np.concatenate([scored[s][name] for s in sets if s.startswith("far")])
        print(f"{name:<12}{cells}{passing:>12.3f}{float(np.mean(far > thresholds[name])):>12.3f}")


def _best(results: dict) -> str:
    def key(name: str) -> tuple[float, float]:
        values = results[name].values()
        return (-np.mean([v["auroc"] for v in values]), np.mean([v["fpr_at_95_tpr"] for v in values]))
    return min(results, key=key)


def _space(loaded, caches: dict[str, np.ndarray], space: str, repeats: int) -> dict:
    """Fit every detector on one feature space, score both families of sets, time the scores."""
    train = _outputs(loaded, caches["train"], space)
    val = _outputs(loaded, caches["val"], space)
    fitted = ood.fit_ood(ood.OodSplits(train[0], val[0], train[1], val[1]), "mahalanobis")["detectors"]
    params = {name: entry["params"] for name, entry in fitted.items()}
    thresholds = {name: entry["threshold"] for name, entry in fitted.items()}
    report: dict = {"validation_pass_rates": {n: e["validation_pass_rate"] for n, e in fitted.items()}}
    for family, photographs, seed in (("selection", gate_eval.SELECTION_PHOTOGRAPHS, 1),
                                      ("test", gate_eval.TEST_PHOTOGRAPHS, 0)):
        images = caches["val" if family == "selection" else "test"]
        reference, scored = _family(loaded, params, images, photographs, seed, space)
        results = gate_eval.compare_detectors(reference, scored)
        _print_table(f"{space} features, {family} sets: AUROC / FPR at 95% TPR ({len(images)} clean "
                     "pictures); pass rates at each detector's conformal threshold", results,
                     thresholds, reference, scored)
        report[family] = {"results": results, "best": _best(results)}
    report["cost_ms"] = _cost_ms(params, val[0], val[1], repeats)
    report["pytorch_ood"] = _agreement(params, val[0], val[1])
    listed = ", ".join(f"{k} {v:.4f}" for k, v in report["cost_ms"].items())
    print(f"best on the selection sets: {report['selection']['best']} (on the test sets: "
          f"{report['test']['best']}); CPU ms per photograph (batch 1, median of {repeats}): {listed}; "
          f"largest difference from pytorch-ood's scores: {report['pytorch_ood'] or 'not installed'}")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("data/06_models/trained_model"))
    parser.add_argument("--cache-dir", type=Path, default=Path("data/05_model_input"))
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--spaces", nargs="+", default=["compressed", "encoder"],
                        choices=["compressed", "encoder"])
    args = parse_args(parser, argv, repeats=5)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    loaded = _load(args.output_dir)
    caches = {split: np.asarray(safe_npy_load(args.cache_dir / f"image_cache_{split}.npy"))
              for split in ("train", "val", "test")}
    report = {space: _space(loaded, caches, space, args.repeats) for space in args.spaces}
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}; machine: {platform.machine()}, "
          f"{torch.get_num_threads()} torch thread; train {len(caches['train'])}, validation "
          f"{len(caches['val'])}, test {len(caches['test'])} pictures")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
