"""The ingestion pipeline on a tiny catalog built from conf/base/catalog_ingestion.yml."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner

from qsight_pipeline.config import DatasetParams, IngestionParams, ModelParams, validate_block
from qsight_pipeline.data.image_cache import UnreadableImagesError, picture
from qsight_pipeline.pipelines.ingestion import create_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZE = 32


def run_ingestion(tmp_path, root, dataset_type="tanlikesmath", seed=0, **ingestion):
    """Run the pipeline with the project's catalog entries, their files moved into tmp_path."""
    config = yaml.safe_load((REPO_ROOT / "conf/base/catalog_ingestion.yml").read_text())
    # Only the file datasets; the in-memory hand-offs are there for kedro-viz's layers.
    config = {name: entry for name, entry in config.items() if "filepath" in entry}
    for entry in config.values():
        entry["filepath"] = str(tmp_path / "out" / Path(entry["filepath"]).name)
    catalog = DataCatalog.from_config(config)
    # The nodes take the typed blocks, as Kedro's parameter validation hands them over.
    params = {
        "dataset": validate_block(
            DatasetParams, {"type": dataset_type, "root": str(root)}, "dataset"
        ),
        "ingestion": validate_block(
            IngestionParams,
            {"val_fraction": 0.2, "test_fraction": 0.2, "on_bad_image": "fail", **ingestion},
            "ingestion",
        ),
        "run.image_size": SIZE,
        "run.seed": seed,
        "model": ModelParams(),  # the demo's test_resnet: its weights' preprocessing
    }
    for key, value in params.items():
        catalog[f"params:{key}"] = value
    SequentialRunner().run(create_pipeline(), catalog)
    return {name: catalog[name].load() for name in config}


def test_tanlikesmath_manifest_caches_and_report(tmp_path, make_sample):
    out = run_ingestion(tmp_path, make_sample("tanlikesmath", patients=15))
    manifest = out["manifest"]
    assert list(manifest.columns) == [
        "image_id", "patient_id", "eye", "grade", "path", "split", "cache_index", "ingestion_id"
    ]
    # One ingestion id, shared by the manifest and the three caches (lineage).
    assert manifest["ingestion_id"].nunique() == 1
    assert {out[f"image_cache_{s}"].lineage["ingestion_id"] for s in ("train", "val", "test")} == set(
        manifest["ingestion_id"]
    )
    assert len(manifest) == 30 and manifest["patient_id"].map(type).eq(str).all()
    assert (manifest.groupby("patient_id")["split"].nunique() == 1).all()
    for split in ("train", "val", "test"):
        rows = manifest[manifest["split"] == split].sort_values("cache_index")
        cache = out[f"image_cache_{split}"]
        assert cache.dtype == np.uint8 and cache.shape == (len(rows), SIZE, SIZE, 3)
        assert rows["cache_index"].tolist() == list(range(len(rows)))
        row = rows.iloc[-1]
        np.testing.assert_array_equal(
            cache[row["cache_index"]], picture(row["path"], out["ingestion_report"]["preprocessing"])
        )
        assert cache.lineage["pictures"]["crop_pct"] == 0.95  # recorded for the model to check
    report = out["ingestion_report"]
    # The pictures follow test_resnet's own preprocessing (timm: bilinear, crop 0.95, mean 0.5).
    assert {key: report["preprocessing"][key] for key in ("image_size", "interpolation", "crop_pct", "mean")} \
        == {"image_size": SIZE, "interpolation": "bilinear", "crop_pct": 0.95, "mean": [0.5, 0.5, 0.5]}
    assert report["images"] == 30 and report["patients"] == 15
    assert sum(s["images"] for s in report["splits"].values()) == 30
    assert report["splits"]["val"]["grades"] == {
        str(g): int(n) for g, n in manifest[manifest.split == "val"].grade.value_counts().reindex(range(5), fill_value=0).items()
    }
    assert report["skipped_images"] == []


def test_sovitrath_keeps_empty_eye_through_the_csv(tmp_path, make_sample):
    manifest = run_ingestion(tmp_path, make_sample("sovitrath", patients=15), "sovitrath")["manifest"]
    assert len(manifest) == 30 and (manifest["eye"] == "").all()
    assert (manifest["patient_id"] == manifest["image_id"]).all()


def test_same_seed_gives_the_same_manifest(tmp_path, make_sample):
    root = make_sample(patients=15)
    first = run_ingestion(tmp_path / "a", root)["manifest"]
    again = run_ingestion(tmp_path / "b", root)["manifest"]
    assert first.equals(again)


def damage(root: Path) -> tuple[Path, Path]:
    images = sorted((root / "resized_train" / "resized_train").glob("*.jpeg"))
    truncated, garbage = images[3], images[10]
    truncated.write_bytes(truncated.read_bytes()[:300])
    garbage.write_text("this is not a JPEG")
    return truncated, garbage


def test_bad_images_fail_the_run_naming_every_file(tmp_path, make_sample):
    truncated, garbage = damage(make_sample(patients=15))
    with pytest.raises(UnreadableImagesError) as caught:
        run_ingestion(tmp_path, truncated.parents[2])
    message = str(caught.value)
    assert "2 images cannot be used" in message and "on_bad_image=skip" in message
    assert str(truncated) in message and str(garbage) in message


def test_bad_images_are_skipped_and_reported(tmp_path, make_sample):
    truncated, garbage = damage(make_sample(patients=15))
    out = run_ingestion(tmp_path, truncated.parents[2], on_bad_image="skip")
    manifest = out["manifest"]
    assert len(manifest) == 28
    assert not {truncated.stem, garbage.stem} & set(manifest["image_id"])
    assert sorted(item["path"] for item in out["ingestion_report"]["skipped_images"]) == sorted(
        [str(truncated), str(garbage)]
    )
    sizes = {s: len(out[f"image_cache_{s}"]) for s in ("train", "val", "test")}
    assert sizes == manifest["split"].value_counts().to_dict()


def test_missing_image_files(tmp_path, make_sample):
    root = make_sample(patients=15)
    missing = sorted((root / "resized_train" / "resized_train").glob("*.jpeg"))[0]
    missing.unlink()
    with pytest.raises(UnreadableImagesError, match=f"{missing}: listed in the labels CSV"):
        run_ingestion(tmp_path, root)
    report = run_ingestion(tmp_path, root, on_bad_image="skip")["ingestion_report"]
    assert report["images"] == 29
    assert report["skipped_images"][0]["image_id"] == missing.stem


@pytest.mark.parametrize(
    ("ingestion", "message"),
    [({"on_bad_image": "ignore"}, "ingestion.on_bad_image: Input should be 'fail' or 'skip'"),
     ({"val_fractoin": 0.1}, "ingestion.val_fractoin: unknown key")],
)
def test_bad_parameters_are_named(tmp_path, make_sample, ingestion, message):
    with pytest.raises(ValueError, match=message):
        run_ingestion(tmp_path, make_sample(patients=5), **ingestion)
