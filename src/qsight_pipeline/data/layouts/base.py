"""What every dataset layout implements, the registry that finds a layout by name, and helpers.

A layout is one class in one file of this package, registered with :func:`register_layout`::

    @register_layout("my_layout")
    class MyLayout(DatasetLayout):
        def scan(self, root): ...                       # find the labelled images under root
        def write_sample_image(self, out_dir, sample, jpeg_quality): ...  # for qsight-sample

``dataset.type`` (and ``qsight-sample --layout``) name it; :func:`get_layout` looks the name up,
and an unknown name is a :class:`DatasetLayoutError` that lists the known ones.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd

from qsight_pipeline.errors import UserError
from qsight_pipeline.files.plain import path_text

logger = logging.getLogger(__name__)

# Suffixes read as images, compared case-insensitively. Anything else in an image folder is ignored.
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpeg", ".jpg", ".png"})
RECORD_COLUMNS: tuple[str, ...] = ("image_id", "patient_id", "eye", "grade", "path")


class DatasetLayoutError(UserError, ValueError):
    """The dataset root does not hold the layout that ``dataset.type`` names."""


@dataclass
class LayoutScan:
    """What a dataset root holds.

    ``records`` has the columns of :data:`RECORD_COLUMNS`, one row per labelled image file, sorted
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
        """A JSON-ready description for the ingestion report (names escaped: :func:`path_text`)."""
        return {
            "dataset_type": self.dataset_type,
            "root": path_text(self.root),
            "labelled_images": len(self.records),
            "labels_without_file": [path_text(name) for name in self.labels_without_file],
            "files_without_label": [path_text(name) for name in self.files_without_label],
            "conflicting_labels": [path_text(name) for name in self.conflicting_labels],
            "unknown_folders": [path_text(name) for name in self.unknown_folders],
            "ignored_non_image_files": self.ignored_non_image_files,
        }


@dataclass
class SampleImage:
    """One synthetic photograph for :meth:`DatasetLayout.write_sample_image` to save."""

    image: Any  # PIL.Image.Image, RGB
    patient_id: int
    eye: str  # "left" or "right"
    grade: int
    rng: np.random.Generator  # this eye's generator, for layouts that draw random file names


class DatasetLayout(ABC):
    """How one dataset layout is read (ingestion) and written (the synthetic sample).

    Must implement :meth:`scan` and :meth:`write_sample_image`; may override
    :meth:`finish_sample`, :meth:`looks_like` and :meth:`missing_image_path`.
    """

    name: ClassVar[str] = ""  # set by @register_layout

    @abstractmethod
    def scan(self, root: Path) -> LayoutScan:
        """Validate the layout under ``root`` (an existing folder) and list its labelled images.

        Raises :class:`DatasetLayoutError` naming the path that was expected and what is there.
        """

    @abstractmethod
    def write_sample_image(self, out_dir: Path, sample: SampleImage, jpeg_quality: int) -> tuple:
        """Save one synthetic photograph under ``out_dir`` where this layout keeps it.

        Returns its manifest row: ``(image_id, patient_id, eye, grade, path)``.
        """

    def finish_sample(self, out_dir: Path, table: pd.DataFrame) -> None:  # noqa: B027 - optional
        """Write what the layout needs beside the images (a labels file, empty class folders)."""

    def looks_like(self, root: Path, image_dir: Path | None = None) -> bool:
        """Whether ``root`` (or the folder where another layout expected its images) looks like
        this layout; it makes the "did you mean dataset.type=...?" hint of other layouts."""
        return False

    def missing_image_path(self, root: Path, image_id: str) -> Path:
        """Where a labelled image that has no file was expected (for the ingestion report)."""
        return root / image_id


# --- the registry ---------------------------------------------------------------------------------

_REGISTRY: dict[str, type[DatasetLayout]] = {}
LayoutClass = TypeVar("LayoutClass", bound=type[DatasetLayout])


def register_layout(name: str) -> Callable[[LayoutClass], LayoutClass]:
    """Class decorator: make ``dataset.type=<name>`` use this :class:`DatasetLayout`."""

    def register(cls: LayoutClass) -> LayoutClass:
        known = _REGISTRY.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"Dataset layout {name!r} is already registered by {known.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return register


def layout_names() -> tuple[str, ...]:
    """The registered layouts, in the order they were registered."""
    return tuple(_REGISTRY)


def get_layout(name: str) -> DatasetLayout:
    """The layout registered as ``name``.

    Raises:
        DatasetLayoutError: no layout has that name; the message lists the known ones.
    """
    if name not in _REGISTRY:
        raise DatasetLayoutError(
            f"Unknown dataset.type {name!r}; expected one of {', '.join(_REGISTRY)}. "
            "A new layout is one class in src/qsight_pipeline/data/layouts/ (see docs/your-own-data.md)."
        )
    return _REGISTRY[name]()


def scan_dataset(root: str | Path, dataset_type: str) -> LayoutScan:
    """Validate the layout of ``root`` for ``dataset_type`` and list its labelled images."""
    layout = get_layout(dataset_type)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        what = "a file" if root.exists() else "nothing"
        raise DatasetLayoutError(
            f"dataset.root {root} is not a folder (found {what} there). Point dataset.root at the "
            f"folder that holds the unzipped {dataset_type} data, e.g. "
            f"`kedro run --params dataset.root=/data/retinopathy`."
        )
    scan = layout.scan(root)
    log_scan(scan)
    return scan


def other_layout_hint(root: Path, dataset_type: str, image_dir: Path | None = None) -> str:
    """' This looks like the X layout: did you mean dataset.type=X?' or ''."""
    for name, cls in _REGISTRY.items():
        if name != dataset_type and cls().looks_like(root, image_dir):
            return f" This looks like the {name} layout: did you mean dataset.type={name}?"
    return ""


# --- helpers for layouts --------------------------------------------------------------------------


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> tuple[list[Path], int]:
    """Image files directly in ``folder`` (sorted), and how many other files were ignored."""
    images, ignored = [], 0
    for path in sorted(folder.iterdir()):
        if is_image_file(path):
            images.append(path)
        elif path.is_file():
            ignored += 1
    return images, ignored


def records_frame(rows: list[tuple]) -> pd.DataFrame:
    """The ``records`` of a :class:`LayoutScan` from ``(image_id, patient_id, eye, grade, path)``.

    Ids taken from a file name that is not valid UTF-8 are escaped (:func:`path_text`); such a
    ``path`` is kept as it is, so the file can still be read, in a column of Python strings
    (pandas' text columns refuse it). Whatever writes a path out escapes it.
    """
    frame = pd.DataFrame(rows, columns=list(RECORD_COLUMNS), dtype=object)
    frame["image_id"] = [path_text(str(value)) for value in frame["image_id"]]
    frame["patient_id"] = [path_text(str(value)) for value in frame["patient_id"]]
    paths = [str(value) for value in frame["path"]]
    typed = frame.astype({"image_id": str, "patient_id": str, "eye": str, "grade": "int64"})
    if all(path_text(path) == path for path in paths):
        return typed.astype({"path": str})
    typed["path"] = pd.Series(paths, index=typed.index, dtype=object)
    return typed


def describe_folder(folder: Path, limit: int = 8) -> str:
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


def example(items: list, limit: int = 3) -> str:
    names = [Path(str(i)).name for i in items[:limit]]
    return ", ".join(repr(n) for n in names) + (", ..." if len(items) > limit else "")


def log_scan(scan: LayoutScan) -> None:
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
            logger.warning("%d %s, e.g. %s", len(items), name, example(items))
    if scan.ignored_non_image_files:
        logger.info("Ignored %d files that are not images", scan.ignored_non_image_files)
