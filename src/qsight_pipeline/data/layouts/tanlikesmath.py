"""The ``tanlikesmath`` Kaggle layout (resized EyePACS photographs, labels in a CSV).

``resized_train/resized_train/<patient>_<left|right>.jpeg`` and a ``trainLabels.csv`` (columns
``image,level``) either in ``resized_train/`` (the user guide) or at the dataset root (where the
Kaggle download puts it).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from qsight_pipeline.constants import NUM_GRADES
from qsight_pipeline.data.layouts.base import (
    IMAGE_SUFFIXES,
    DatasetLayout,
    DatasetLayoutError,
    LayoutScan,
    SampleImage,
    describe_folder,
    example,
    is_image_file,
    list_images,
    other_layout_hint,
    records_frame,
    register_layout,
)

TANLIKESMATH = "tanlikesmath"
TANLIKESMATH_IMAGE_DIR = Path("resized_train") / "resized_train"
TANLIKESMATH_LABEL_FILES: tuple[Path, ...] = (
    Path("resized_train") / "trainLabels.csv",
    Path("trainLabels.csv"),
)

_EYE_PATTERN = re.compile(r"^(?P<patient>.+)_(?P<eye>left|right)$", re.IGNORECASE)


@register_layout(TANLIKESMATH)
class TanlikesmathLayout(DatasetLayout):
    """JPEG files named ``<patient>_<eye>`` in one folder, grades in ``trainLabels.csv``."""

    def scan(self, root: Path) -> LayoutScan:
        image_dir = root / TANLIKESMATH_IMAGE_DIR
        if not image_dir.is_dir():
            raise DatasetLayoutError(
                f"dataset.type=tanlikesmath expects the images in {image_dir}, but that folder "
                f"does not exist. {describe_folder(root)}{_hint(root)}"
            )
        images, ignored = list_images(image_dir)
        if not images:
            raise DatasetLayoutError(
                f"dataset.type=tanlikesmath expects .jpeg images in {image_dir}, but found 0 image "
                f"files (.jpeg/.jpg/.png) there. {describe_folder(image_dir)}"
                f"{_hint(root, image_dir)}"
            )
        labels_path = _find_labels_csv(root)
        grade_by_id, conflicting = _unique_labels(_read_labels_csv(labels_path))
        files_by_id = _files_by_id(images, image_dir)

        labelled_ids = sorted(set(grade_by_id) & set(files_by_id))
        if not labelled_ids:
            raise DatasetLayoutError(
                f"None of the {len(grade_by_id)} labels in {labels_path} matches one of the "
                f"{len(files_by_id)} images in {image_dir}: the CSV names images like "
                f"{example(sorted(grade_by_id))}, the folder holds files like "
                f"{example(sorted(files_by_id))}. The CSV's `image` column must be the file name "
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
            records=records_frame(rows),
            labels_without_file=sorted(set(grade_by_id) - set(files_by_id)),
            files_without_label=sorted(
                str(files_by_id[i][0]) for i in set(files_by_id) - set(grade_by_id) - set(conflicting)
            ),
            conflicting_labels=sorted(conflicting),
            ignored_non_image_files=ignored,
        )

    def write_sample_image(self, out_dir: Path, sample: SampleImage, jpeg_quality: int) -> tuple:
        image_id = f"{sample.patient_id}_{sample.eye}"
        path = out_dir / TANLIKESMATH_IMAGE_DIR / f"{image_id}.jpeg"
        path.parent.mkdir(parents=True, exist_ok=True)
        sample.image.save(path, "JPEG", quality=jpeg_quality, optimize=True)
        return image_id, str(sample.patient_id), sample.eye, sample.grade, str(path)

    def finish_sample(self, out_dir: Path, table: pd.DataFrame) -> None:
        labels = table[["image_id", "grade"]].rename(columns={"image_id": "image", "grade": "level"})
        labels.to_csv(out_dir / TANLIKESMATH_LABEL_FILES[0], index=False)

    def looks_like(self, root: Path, image_dir: Path | None = None) -> bool:
        return (root / "resized_train").is_dir()

    def missing_image_path(self, root: Path, image_id: str) -> Path:
        return root / TANLIKESMATH_IMAGE_DIR / f"{image_id}.jpeg"


def _hint(root: Path, image_dir: Path | None = None) -> str:
    """A 'did you mean' when the data look like another layout or sit one level off."""
    other = other_layout_hint(root, TANLIKESMATH, image_dir)
    if other:
        return other
    if root.name == "resized_train" and (root / "resized_train").is_dir():
        return f" dataset.root should be the folder above it: {root.parent}."
    if any(is_image_file(p) for p in root.iterdir()):
        return (
            f" The images seem to lie directly in {root}; move them to {TANLIKESMATH_IMAGE_DIR}"
            " or point dataset.root at the folder that holds resized_train/."
        )
    return ""


def _files_by_id(images: list[Path], image_dir: Path) -> dict[str, list[Path]]:
    files_by_id: dict[str, list[Path]] = {}
    for path in images:
        files_by_id.setdefault(path.stem, []).append(path)
    duplicated = sorted(image_id for image_id, paths in files_by_id.items() if len(paths) > 1)
    if duplicated:
        raise DatasetLayoutError(
            f"{len(duplicated)} image names occur with more than one suffix in {image_dir} "
            f"(e.g. {example(files_by_id[duplicated[0]])}); keep one file per image."
        )
    return files_by_id


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
