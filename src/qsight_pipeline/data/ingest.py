"""Ingestion: scan a data set's layout, split it by patient, decode every photograph once.

The ``ingestion`` pipeline's nodes and the Python API (``inference.api``) both call these
functions; nothing here imports Kedro.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qsight_pipeline.config import DatasetParams, IngestionParams
from qsight_pipeline.constants import NUM_GRADES, SPLITS
from qsight_pipeline.data.guards import grade_coverage
from qsight_pipeline.data.image_cache import UnreadableImagesError, build_image_cache
from qsight_pipeline.data.layouts import RECORD_COLUMNS, get_layout
from qsight_pipeline.data.layouts import scan_dataset as scan_layout
from qsight_pipeline.data.preprocessing import PICTURES_KEY, Preprocessing, from_saved
from qsight_pipeline.data.splits import assign_splits
from qsight_pipeline.files import lineage
from qsight_pipeline.files.plain import path_text

logger = logging.getLogger(__name__)

# The manifest: a layout's records (data.layouts.RECORD_COLUMNS), their split and cache row.
MANIFEST_COLUMNS = (*RECORD_COLUMNS, "split", "cache_index")


def _bad_images_message(bad: list[dict[str, str]], policy_hint: bool = True) -> str:
    lines = "\n".join(f"  {item['path']}: {item['reason']}" for item in bad)
    hint = (
        "\nFix or remove them, or set ingestion.on_bad_image=skip to leave them out "
        "(they are then listed in data/08_reporting/ingestion_report.json)."
        if policy_hint
        else ""
    )
    return f"{len(bad)} images cannot be used:\n{lines}{hint}"


def _missing_images(layout_findings: dict[str, Any]) -> list[dict[str, str]]:
    """Labels whose image file does not exist, as bad-image records."""
    layout = get_layout(layout_findings["dataset_type"])
    root = Path(layout_findings["root"])
    return [
        {
            "image_id": image_id,
            "path": path_text(layout.missing_image_path(root, image_id)),
            "reason": "listed in the labels CSV, but no image file exists",
        }
        for image_id in layout_findings.get("labels_without_file", [])
    ]


def scan_dataset(
    dataset: DatasetParams, ingestion: IngestionParams
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Validate the layout of ``dataset.root`` for ``dataset.type`` and list its labelled images.

    Returns the labelled images (``image_id, patient_id, eye, grade, path``, absolute paths) and
    the findings for the report: labels without a file, files without a label, conflicting labels.
    Labels whose image file is missing fail the run unless ``ingestion.on_bad_image`` is ``skip``.
    """
    settings = ingestion
    scan = scan_layout(dataset.root, dataset.type)
    findings = scan.summary()
    missing = _missing_images(findings)
    if missing:
        if settings.on_bad_image == "fail":
            raise UnreadableImagesError(
                _bad_images_message(missing)
                + "\n(Stopped before decoding; other unreadable images may follow.)"
            )
        logger.warning("Skipping %d labels without an image file", len(missing))
    return scan.records, findings


def split_by_patient(
    labelled_images: pd.DataFrame, ingestion: IngestionParams, seed: int
) -> pd.DataFrame:
    """Add a ``split`` column: patient-grouped, stratified by the patient's worst grade."""
    settings = ingestion
    grade_coverage({"data set": labelled_images["grade"]})  # one grade only: an error
    split = assign_splits(labelled_images, settings.val_fraction, settings.test_fraction, seed)
    result = labelled_images.assign(split=split.to_numpy())
    for warning in _coverage_warnings(result):
        logger.warning(warning)
    return result


def _coverage_warnings(images: pd.DataFrame) -> list[str]:
    """A warning per split that lacks some grade (also written to the ingestion report)."""
    return grade_coverage(
        {split: images.loc[images["split"] == split, "grade"] for split in SPLITS}
    )


def build_image_caches(
    split_images: pd.DataFrame, preprocessing: Preprocessing | dict[str, Any] | int,
    ingestion: IngestionParams,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, list[dict[str, str]]]:
    """Decode every image once into a uint8 ``(N, S, S, 3)`` array per split: the pictures of
    the one pixel path (``data.image_cache.picture``) with the model's ``preprocessing`` (an
    ``int`` is a side, with the bicubic letterbox of before).

    Returns the manifest (with ``cache_index``, the row of each image in its split's cache), the
    train, val and test caches, and the images that failed to decode. With
    ``ingestion.on_bad_image: fail`` any failure raises an error that names every bad file; with
    ``skip`` those images are left out of the manifest and the caches.
    """
    settings = ingestion
    pictures = from_saved(preprocessing)
    manifests, caches, unreadable = [], {}, []
    for split in SPLITS:
        rows = split_images[split_images["split"] == split].reset_index(drop=True)
        cache, failures = build_image_cache(
            rows["path"].tolist(), pictures, settings.workers,
            description=f"caching {split}", max_pixels=settings.max_pixels,
        )
        unreadable += [
            {"path": path_text(rows.at[row, "path"]),
             "reason": path_text(reason.split(": ", 1)[-1]), "split": split}
            for row, reason in sorted(failures.items())
        ]
        if failures:
            keep = np.setdiff1d(np.arange(len(rows)), list(failures))
            # Move the good rows down in place (the cache may be a large file-backed array).
            cache[: len(keep)] = cache[keep]
            cache = cache[: len(keep)]
            rows = rows.iloc[keep].reset_index(drop=True)
        caches[split] = cache
        manifests.append(rows.assign(cache_index=np.arange(len(rows), dtype=np.int64)))

    if unreadable and settings.on_bad_image == "fail":
        raise UnreadableImagesError(_bad_images_message(unreadable))
    if unreadable:
        logger.warning("Skipped %d images that do not decode", len(unreadable))
    empty = [split for split in SPLITS if len(caches[split]) == 0]
    if empty:
        raise UnreadableImagesError(
            f"The {', '.join(empty)} split has no readable images left; see the errors above."
        )
    manifest = pd.concat(manifests, ignore_index=True)[list(MANIFEST_COLUMNS)]
    # A path that is not valid UTF-8 was read as it is; the manifest (a UTF-8 CSV) shows it escaped.
    manifest["path"] = pd.Series(
        [path_text(path) for path in manifest["path"]], index=manifest.index, dtype=str
    )
    # One id for the manifest and the three caches, so readers can tell a matching set from the
    # leftovers of an interrupted or concurrent ingestion.
    run_id = lineage.ingestion_id(manifest.itertuples(index=False), caches)
    manifest[lineage.INGESTION_ID_COLUMN] = run_id
    for split in SPLITS:
        logger.info("image_cache_%s: %s uint8", split, tuple(caches[split].shape))
        caches[split] = lineage.tag(caches[split], {
            "ingestion_id": run_id, "split": split, PICTURES_KEY: pictures.picture_settings(),
        })
    return manifest, caches["train"], caches["val"], caches["test"], unreadable


def build_image_caches_caches_first(
    split_images: pd.DataFrame, preprocessing: dict[str, Any] | int, ingestion: IngestionParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame, list[dict[str, str]]]:
    """:func:`build_image_caches` with the caches first: Kedro saves outputs in this order, so the
    manifest, which readers take as the truth, is written last."""
    manifest, train, val, test, unreadable = build_image_caches(split_images, preprocessing, ingestion)
    return train, val, test, manifest, unreadable


def summarise_ingestion(
    manifest: pd.DataFrame,
    layout_findings: dict[str, Any],
    unreadable_images: list[dict[str, str]],
    ingestion: IngestionParams,
    preprocessing: dict[str, Any] | int,
    seed: int,
) -> dict[str, Any]:
    """The ingestion report: counts per split and grade, every file that was left out, with why,
    and the preprocessing the cached pictures follow."""
    settings = ingestion
    pictures = from_saved(preprocessing)
    splits = {}
    for split in SPLITS:
        rows = manifest[manifest["split"] == split]
        per_grade = rows["grade"].value_counts().reindex(range(NUM_GRADES), fill_value=0)
        splits[split] = {
            "images": len(rows),
            "patients": int(rows["patient_id"].nunique()),
            "grades": {str(grade): int(count) for grade, count in per_grade.items()},
        }
    missing = _missing_images(layout_findings)
    skipped = (missing + unreadable_images) if settings.on_bad_image == "skip" else []
    report = {
        "dataset": {"type": layout_findings["dataset_type"], "root": layout_findings.get("root")},
        "image_size": pictures.image_size,
        "preprocessing": pictures.to_dict(),
        "seed": int(seed),
        "val_fraction": settings.val_fraction,
        "test_fraction": settings.test_fraction,
        "on_bad_image": settings.on_bad_image,
        "images": len(manifest),
        "patients": int(manifest["patient_id"].nunique()),
        "splits": splits,
        "skipped_images": skipped,
        "files_without_label": layout_findings.get("files_without_label", []),
        "conflicting_labels": layout_findings.get("conflicting_labels", []),
        "unknown_folders": layout_findings.get("unknown_folders", []),
        "ignored_non_image_files": layout_findings.get("ignored_non_image_files", 0),
        "warnings": _coverage_warnings(manifest),
    }
    logger.info(
        "Ingested %d images of %d patients: train %d, val %d, test %d; %d skipped",
        report["images"], report["patients"], splits["train"]["images"],
        splits["val"]["images"], splits["test"]["images"], len(skipped),
    )
    return report
