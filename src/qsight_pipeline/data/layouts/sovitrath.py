"""The ``sovitrath`` Kaggle layout (APTOS photographs, Gaussian-filtered, one folder per grade).

``gaussian_filtered_images/gaussian_filtered_images/<class>/*.png`` with the class folders
``No_DR, Mild, Moderate, Severe, Proliferate_DR`` mapped to grades 0..4 in clinical order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from qsight_pipeline.constants import NUM_GRADES, SOVITRATH_CLASS_FOLDERS
from qsight_pipeline.data.layouts.base import (
    DatasetLayout,
    DatasetLayoutError,
    LayoutScan,
    SampleImage,
    describe_folder,
    list_images,
    other_layout_hint,
    records_frame,
    register_layout,
)

logger = logging.getLogger(__name__)

SOVITRATH = "sovitrath"
SOVITRATH_IMAGE_DIR = Path("gaussian_filtered_images") / "gaussian_filtered_images"


@register_layout(SOVITRATH)
class SovitrathLayout(DatasetLayout):
    """PNG files in one folder per grade; no patient ids (each image is its own patient)."""

    def scan(self, root: Path) -> LayoutScan:
        image_dir = root / SOVITRATH_IMAGE_DIR
        if not image_dir.is_dir():
            raise DatasetLayoutError(
                f"dataset.type=sovitrath expects the class folders in {image_dir}, but that folder "
                f"does not exist. {describe_folder(root)}{_hint(root)}"
            )
        folders = {p.name.lower(): p for p in image_dir.iterdir() if p.is_dir()}
        expected = {name.lower(): grade for grade, name in enumerate(SOVITRATH_CLASS_FOLDERS)}
        class_dirs = {grade: folders[name] for name, grade in expected.items() if name in folders}
        if not class_dirs:
            raise DatasetLayoutError(
                f"dataset.type=sovitrath expects the class folders "
                f"{', '.join(SOVITRATH_CLASS_FOLDERS)} in {image_dir}, but found none of them. "
                f"{describe_folder(image_dir)}"
            )
        missing = [SOVITRATH_CLASS_FOLDERS[g] for g in range(NUM_GRADES) if g not in class_dirs]
        if missing:
            logger.warning(
                "sovitrath: class folders %s are missing from %s; those grades will have no images.",
                ", ".join(missing),
                image_dir,
            )
        paths_by_id, ignored = _paths_by_id(class_dirs)
        if not paths_by_id:
            raise DatasetLayoutError(
                f"dataset.type=sovitrath found the class folders in {image_dir} but 0 image files "
                f"(.png/.jpeg/.jpg) in them. {describe_folder(next(iter(class_dirs.values())))}"
            )
        rows = [
            # No patient ids in this layout: each image is its own patient.
            (image_id, image_id, "", entries[0][0], str(entries[0][1]))
            for image_id, entries in sorted(paths_by_id.items())
            if len(entries) == 1
        ]
        return LayoutScan(
            dataset_type=SOVITRATH,
            root=root,
            records=records_frame(rows),
            # The same file name in two class folders is one image with two labels: leave it out.
            conflicting_labels=sorted(i for i, entries in paths_by_id.items() if len(entries) > 1),
            unknown_folders=sorted(p.name for name, p in folders.items() if name not in expected),
            ignored_non_image_files=ignored,
        )

    def write_sample_image(self, out_dir: Path, sample: SampleImage, jpeg_quality: int) -> tuple:
        image_id = f"{int(sample.rng.integers(16**12)):012x}"
        path = out_dir / SOVITRATH_IMAGE_DIR / SOVITRATH_CLASS_FOLDERS[sample.grade] / f"{image_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        gaussian_filtered(sample.image).save(path, "PNG", optimize=True)
        return image_id, image_id, "", sample.grade, str(path)

    def finish_sample(self, out_dir: Path, table: pd.DataFrame) -> None:
        for folder in SOVITRATH_CLASS_FOLDERS:  # an empty class still gets its folder
            (out_dir / SOVITRATH_IMAGE_DIR / folder).mkdir(parents=True, exist_ok=True)

    def looks_like(self, root: Path, image_dir: Path | None = None) -> bool:
        class_names = {n.lower() for n in SOVITRATH_CLASS_FOLDERS}
        return (root / "gaussian_filtered_images").is_dir() or (
            image_dir is not None
            and any(p.is_dir() and p.name.lower() in class_names for p in image_dir.iterdir())
        )


def _hint(root: Path) -> str:
    other = other_layout_hint(root, SOVITRATH)
    if other:
        return other
    if root.name == "gaussian_filtered_images":
        return f" dataset.root should be the folder above it: {root.parent}."
    return ""


def _paths_by_id(class_dirs: dict[int, Path]) -> tuple[dict[str, list[tuple[int, Path]]], int]:
    """Grade and path of every image file per file stem, and how many other files were ignored."""
    ignored = 0
    paths_by_id: dict[str, list[tuple[int, Path]]] = {}
    for grade, folder in sorted(class_dirs.items()):
        images, ignored_here = list_images(folder)
        ignored += ignored_here
        for path in images:
            paths_by_id.setdefault(path.stem, []).append((grade, path))
    return paths_by_id, ignored


def gaussian_filtered(image: Image.Image) -> Image.Image:
    """Ben Graham's local-contrast filter (``4*img - 4*blur(img) + 128``), as in sovitrath's images."""
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(image.width / 30)), dtype=np.float32)
    rgb = np.asarray(image, dtype=np.float32)
    out = 4 * rgb - 4 * blurred + 128
    field = rgb.max(axis=2, keepdims=True) > 12  # keep the surround black
    return Image.fromarray(np.clip(np.where(field, out, 0), 0, 255).astype(np.uint8), "RGB")
