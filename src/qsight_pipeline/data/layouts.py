"""Find the labelled images of a dataset root in one of the two Kaggle layouts.

- ``tanlikesmath``: ``resized_train/resized_train/<patient>_<left|right>.jpeg`` and a
  ``trainLabels.csv`` (columns ``image,level``) either in ``resized_train/`` (the user guide) or at
  the dataset root (where the Kaggle download puts it).
- ``sovitrath``: ``gaussian_filtered_images/gaussian_filtered_images/<class>/*.png`` with the class
  folders ``No_DR, Mild, Moderate, Severe, Proliferate_DR`` mapped to grades 0..4 in clinical order.

A layout that does not match raises :class:`DatasetLayoutError` with a message that names the path
that was expected and what was found there. Nothing here decodes images; see ``image_cache``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from qsight_pipeline.constants import NUM_GRADES, SOVITRATH_CLASS_FOLDERS
from qsight_pipeline.errors import UserError

logger = logging.getLogger(__name__)

TANLIKESMATH = "tanlikesmath"
SOVITRATH = "sovitrath"
DATASET_TYPES: tuple[str, ...] = (TANLIKESMATH, SOVITRATH)

# Suffixes read as images, compared case-insensitively. Anything else in an image folder is ignored.
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpeg", ".jpg", ".png"})

TANLIKESMATH_IMAGE_DIR = Path("resized_train") / "resized_train"
TANLIKESMATH_LABEL_FILES: tuple[Path, ...] = (
    Path("resized_train") / "trainLabels.csv",
    Path("trainLabels.csv"),
)
SOVITRATH_IMAGE_DIR = Path("gaussian_filtered_images") / "gaussian_filtered_images"

MANIFEST_COLUMNS: tuple[str, ...] = ("image_id", "patient_id", "eye", "grade", "path")

_EYE_PATTERN = re.compile(r"^(?P<patient>.+)_(?P<eye>left|right)$", re.IGNORECASE)


class DatasetLayoutError(UserError, ValueError):
    """The dataset root does not hold the layout that ``dataset.type`` names."""


@dataclass
class LayoutScan:
    """What a dataset root holds.

    ``records`` has the columns of :data:`MANIFEST_COLUMNS`, one row per labelled image file, sorted
    by ``image_id``. The lists name everything that was left out, so that nothing is dropped
    silently: labels whose file is missing, image files without a label, images with conflicting
    labels, and folders that are not one of the expected classes.
    """

    dataset_type: str
    root: Path
    records: pd.DataFrame
    labels_without_file: list[str] = field(default_factory=list)
    files_without_label: list[str] = field(default_factory=list)
    conflicting_labels: list[str] = field(default_factory=list)
    unknown_folders: list[str] = field(default_factory=list)
    ignored_non_image_files: int = 0

    def summary(self) -> dict:
        """A JSON-ready description for the ingestion report."""
        return {
            "dataset_type": self.dataset_type,
            "root": str(self.root),
            "labelled_images": len(self.records),
            "labels_without_file": list(self.labels_without_file),
            "files_without_label": list(self.files_without_label),
            "conflicting_labels": list(self.conflicting_labels),
            "unknown_folders": list(self.unknown_folders),
            "ignored_non_image_files": self.ignored_non_image_files,
        }


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def scan_dataset(root: str | Path, dataset_type: str) -> LayoutScan:
    """Validate the layout of ``root`` for ``dataset_type`` and list its labelled images."""
    if dataset_type not in DATASET_TYPES:
        raise DatasetLayoutError(
            f"Unknown dataset.type {dataset_type!r}; expected one of {', '.join(DATASET_TYPES)}."
        )
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        what = "a file" if root.exists() else "nothing"
        raise DatasetLayoutError(
            f"dataset.root {root} is not a folder (found {what} there). Point dataset.root at the "
            f"folder that holds the unzipped {dataset_type} data, e.g. "
            f"`kedro run --params dataset.root=/data/retinopathy`."
        )
    scan = _scan_tanlikesmath(root) if dataset_type == TANLIKESMATH else _scan_sovitrath(root)
    _log_scan(scan)
    return scan


# --- tanlikesmath ---------------------------------------------------------------------------------


def _scan_tanlikesmath(root: Path) -> LayoutScan:
    image_dir = root / TANLIKESMATH_IMAGE_DIR
    if not image_dir.is_dir():
        raise DatasetLayoutError(
            f"dataset.type=tanlikesmath expects the images in {image_dir}, but that folder does "
            f"not exist. {_describe_folder(root)}{_hint_other_layout(root, TANLIKESMATH)}"
        )
    images, ignored = _list_images(image_dir)
    if not images:
        raise DatasetLayoutError(
            f"dataset.type=tanlikesmath expects .jpeg images in {image_dir}, but found 0 image "
            f"files (.jpeg/.jpg/.png) there. {_describe_folder(image_dir)}"
            f"{_hint_other_layout(root, TANLIKESMATH, image_dir)}"
        )
    labels_path = _find_labels_csv(root)
    labels = _read_labels_csv(labels_path)

    files_by_id: dict[str, list[Path]] = {}
    for path in images:
        files_by_id.setdefault(path.stem, []).append(path)
    duplicated_files = sorted(image_id for image_id, paths in files_by_id.items() if len(paths) > 1)
    if duplicated_files:
        raise DatasetLayoutError(
            f"{len(duplicated_files)} image names occur with more than one suffix in {image_dir} "
            f"(e.g. {_example(files_by_id[duplicated_files[0]])}); keep one file per image."
        )

    grade_by_id, conflicting = _unique_labels(labels)
    labelled_ids = sorted(set(grade_by_id) & set(files_by_id))
    labels_without_file = sorted(set(grade_by_id) - set(files_by_id))
    files_without_label = sorted(
        str(files_by_id[i][0]) for i in set(files_by_id) - set(grade_by_id) - set(conflicting)
    )
    if not labelled_ids:
        raise DatasetLayoutError(
            f"None of the {len(grade_by_id)} labels in {labels_path} matches one of the "
            f"{len(files_by_id)} images in {image_dir}: the CSV names images like "
            f"{_example(sorted(grade_by_id))}, the folder holds files like "
            f"{_example(sorted(files_by_id))}. The CSV's `image` column must be the file name "
            f"without its suffix."
        )
    rows = []
    for image_id in labelled_ids:
        match = _EYE_PATTERN.match(image_id)
        patient_id, eye = (match["patient"], match["eye"].lower()) if match else (image_id, "")
        rows.append((image_id, patient_id, eye, grade_by_id[image_id], str(files_by_id[image_id][0])))
    return LayoutScan(
        dataset_type=TANLIKESMATH,
        root=root,
        records=_records_frame(rows),
        labels_without_file=labels_without_file,
        files_without_label=files_without_label,
        conflicting_labels=sorted(conflicting),
        ignored_non_image_files=ignored,
    )


def _find_labels_csv(root: Path) -> Path:
    for relative in TANLIKESMATH_LABEL_FILES:
        if (root / relative).is_file():
            return root / relative
    candidates = sorted(p.name for p in root.glob("*.csv")) + sorted(
        f"resized_train/{p.name}" for p in (root / "resized_train").glob("*.csv")
    )
    found = f"CSV files found: {', '.join(candidates)}." if candidates else "No CSV file found."
    raise DatasetLayoutError(
        "dataset.type=tanlikesmath expects the labels in "
        f"{root / TANLIKESMATH_LABEL_FILES[0]} or {root / TANLIKESMATH_LABEL_FILES[1]} "
        f"(columns image,level), but neither exists. {found}"
    )


def _read_labels_csv(path: Path) -> pd.DataFrame:
    try:
        labels = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetLayoutError(f"Cannot read the labels CSV {path}: {error}") from None
    labels.columns = [str(c).strip() for c in labels.columns]
    missing = [c for c in ("image", "level") if c not in labels.columns]
    if missing:
        raise DatasetLayoutError(
            f"The labels CSV {path} must have the columns image,level; it lacks "
            f"{','.join(missing)} (found columns: {', '.join(labels.columns) or 'none'})."
        )
    labels = labels[["image", "level"]].apply(lambda column: column.str.strip())
    levels = pd.to_numeric(labels["level"], errors="coerce")
    bad = labels[levels.isna() | ~levels.isin(range(NUM_GRADES))]
    if len(bad):
        examples = ", ".join(f"{r.image}={r.level!r}" for r in bad.head(5).itertuples())
        raise DatasetLayoutError(
            f"The labels CSV {path} has {len(bad)} rows whose level is not a grade 0..4 "
            f"(e.g. {examples})."
        )
    # Accept `10_left.jpeg` as well as the usual `10_left`.
    images = labels["image"].map(
        lambda name: Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else name
    )
    return pd.DataFrame({"image": images, "level": levels.astype(int)})


def _unique_labels(labels: pd.DataFrame) -> tuple[dict[str, int], set[str]]:
    """Grade per image; images listed twice with different grades are left out and named."""
    grades_per_image = labels.groupby("image")["level"].agg(lambda s: sorted(set(s)))
    conflicting = {image for image, grades in grades_per_image.items() if len(grades) > 1}
    grade_by_id = {
        image: grades[0] for image, grades in grades_per_image.items() if image not in conflicting
    }
    return grade_by_id, conflicting


# --- sovitrath ------------------------------------------------------------------------------------


def _scan_sovitrath(root: Path) -> LayoutScan:
    image_dir = root / SOVITRATH_IMAGE_DIR
    if not image_dir.is_dir():
        raise DatasetLayoutError(
            f"dataset.type=sovitrath expects the class folders in {image_dir}, but that folder "
            f"does not exist. {_describe_folder(root)}{_hint_other_layout(root, SOVITRATH)}"
        )
    folders = {p.name.lower(): p for p in image_dir.iterdir() if p.is_dir()}
    expected = {name.lower(): grade for grade, name in enumerate(SOVITRATH_CLASS_FOLDERS)}
    class_dirs = {grade: folders[name] for name, grade in expected.items() if name in folders}
    if not class_dirs:
        raise DatasetLayoutError(
            f"dataset.type=sovitrath expects the class folders {', '.join(SOVITRATH_CLASS_FOLDERS)} "
            f"in {image_dir}, but found none of them. {_describe_folder(image_dir)}"
        )
    missing = [SOVITRATH_CLASS_FOLDERS[g] for g in range(NUM_GRADES) if g not in class_dirs]
    if missing:
        logger.warning(
            "sovitrath: class folders %s are missing from %s; those grades will have no images.",
            ", ".join(missing),
            image_dir,
        )
    unknown = sorted(p.name for name, p in folders.items() if name not in expected)

    ignored = 0
    paths_by_id: dict[str, list[tuple[int, Path]]] = {}
    for grade, folder in sorted(class_dirs.items()):
        images, ignored_here = _list_images(folder)
        ignored += ignored_here
        for path in images:
            paths_by_id.setdefault(path.stem, []).append((grade, path))
    if not paths_by_id:
        raise DatasetLayoutError(
            f"dataset.type=sovitrath found the class folders in {image_dir} but 0 image files "
            f"(.png/.jpeg/.jpg) in them. {_describe_folder(next(iter(class_dirs.values())))}"
        )
    # The same file name in two class folders is one image with two labels: leave it out.
    conflicting = sorted(i for i, entries in paths_by_id.items() if len(entries) > 1)
    rows = [
        # No patient ids in this layout: each image is its own patient.
        (image_id, image_id, "", entries[0][0], str(entries[0][1]))
        for image_id, entries in sorted(paths_by_id.items())
        if len(entries) == 1
    ]
    return LayoutScan(
        dataset_type=SOVITRATH,
        root=root,
        records=_records_frame(rows),
        conflicting_labels=conflicting,
        unknown_folders=unknown,
        ignored_non_image_files=ignored,
    )


# --- helpers --------------------------------------------------------------------------------------


def _list_images(folder: Path) -> tuple[list[Path], int]:
    """Image files directly in ``folder`` (sorted), and how many other files were ignored."""
    images, ignored = [], 0
    for path in sorted(folder.iterdir()):
        if is_image_file(path):
            images.append(path)
        elif path.is_file():
            ignored += 1
    return images, ignored


def _records_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    return frame.astype(
        {"image_id": str, "patient_id": str, "eye": str, "grade": "int64", "path": str}
    )


def _describe_folder(folder: Path, limit: int = 8) -> str:
    """'Found in X: 3 folders (a, b, c) and 12 files (12 .png).'"""
    if not folder.is_dir():
        return ""
    entries = sorted(folder.iterdir())
    dirs = [p.name for p in entries if p.is_dir()]
    suffixes = Counter(p.suffix.lower() or "(no suffix)" for p in entries if p.is_file())
    if not dirs and not suffixes:
        return f"{folder} is empty."
    parts = []
    if dirs:
        shown = ", ".join(dirs[:limit]) + (", ..." if len(dirs) > limit else "")
        parts.append(f"{len(dirs)} folders ({shown})")
    if suffixes:
        counts = ", ".join(f"{n} {s}" for s, n in suffixes.most_common())
        parts.append(f"{sum(suffixes.values())} files ({counts})")
    return f"Found in {folder}: {' and '.join(parts)}."


def _hint_other_layout(root: Path, dataset_type: str, image_dir: Path | None = None) -> str:
    """A 'did you mean' when the data look like the other layout or sit one level off."""
    if dataset_type == TANLIKESMATH:
        class_names = {n.lower() for n in SOVITRATH_CLASS_FOLDERS}
        looks_sovitrath = (root / "gaussian_filtered_images").is_dir() or (
            image_dir is not None
            and any(p.is_dir() and p.name.lower() in class_names for p in image_dir.iterdir())
        )
        if looks_sovitrath:
            return " This looks like the sovitrath layout: did you mean dataset.type=sovitrath?"
        if root.name == "resized_train" and (root / "resized_train").is_dir():
            return f" dataset.root should be the folder above it: {root.parent}."
        if any(is_image_file(p) for p in root.iterdir()):
            return (
                f" The images seem to lie directly in {root}; move them to {TANLIKESMATH_IMAGE_DIR}"
                " or point dataset.root at the folder that holds resized_train/."
            )
    else:
        if (root / "resized_train").is_dir():
            return " This looks like the tanlikesmath layout: did you mean dataset.type=tanlikesmath?"
        if root.name == "gaussian_filtered_images":
            return f" dataset.root should be the folder above it: {root.parent}."
    return ""


def _example(items: list, limit: int = 3) -> str:
    names = [Path(str(i)).name for i in items[:limit]]
    return ", ".join(repr(n) for n in names) + (", ..." if len(items) > limit else "")


def _log_scan(scan: LayoutScan) -> None:
    logger.info(
        "%s: %d labelled images of %d patients in %s",
        scan.dataset_type,
        len(scan.records),
        scan.records["patient_id"].nunique(),
        scan.root,
    )
    for name, items in (
        ("labels without an image file", scan.labels_without_file),
        ("image files without a label (ignored)", scan.files_without_label),
        ("images with conflicting labels (ignored)", scan.conflicting_labels),
        ("unknown folders (ignored)", scan.unknown_folders),
    ):
        if items:
            logger.warning("%d %s, e.g. %s", len(items), name, _example(items))
    if scan.ignored_non_image_files:
        logger.info("Ignored %d files that are not images", scan.ignored_non_image_files)
