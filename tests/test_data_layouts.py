"""Dataset layouts: both Kaggle layouts on generated data, and every bad-layout message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qsight_pipeline.constants import SOVITRATH_CLASS_FOLDERS
from qsight_pipeline.data.layouts import (
    SOVITRATH_IMAGE_DIR,
    TANLIKESMATH_IMAGE_DIR,
    DatasetLayoutError,
    scan_dataset,
)

LABELS = Path("resized_train") / "trainLabels.csv"


def test_tanlikesmath_lists_every_labelled_image(make_sample):
    root = make_sample("tanlikesmath", patients=10)
    scan = scan_dataset(root, "tanlikesmath")
    records = scan.records
    assert len(records) == 20
    assert list(records.columns) == ["image_id", "patient_id", "eye", "grade", "path"]
    assert set(records["eye"]) == {"left", "right"}
    assert (records.groupby("patient_id").size() == 2).all()
    assert records["image_id"].tolist() == (records["patient_id"] + "_" + records["eye"]).tolist()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in records["path"])
    assert set(records["grade"]) == {0, 1, 2, 3, 4}
    assert not scan.labels_without_file and not scan.files_without_label


def test_tanlikesmath_accepts_labels_at_root_and_other_suffixes(make_sample):
    root = make_sample("tanlikesmath", patients=5)
    shutil.move(root / LABELS, root / "trainLabels.csv")
    image_dir = root / TANLIKESMATH_IMAGE_DIR
    first = sorted(image_dir.iterdir())[0]
    first.rename(first.with_suffix(".JPG"))
    (image_dir / "notes.txt").write_text("not an image")
    (image_dir / ".DS_Store").write_bytes(b"\0")
    scan = scan_dataset(root, "tanlikesmath")
    assert len(scan.records) == 10
    assert scan.ignored_non_image_files == 2
    assert any(p.endswith(".JPG") for p in scan.records["path"])


def test_tanlikesmath_reports_labels_and_files_that_do_not_match(make_sample):
    root = make_sample("tanlikesmath", patients=5)
    image_dir = root / TANLIKESMATH_IMAGE_DIR
    victim = sorted(image_dir.iterdir())[0]
    victim.unlink()
    shutil.copy(sorted(image_dir.iterdir())[0], image_dir / "999_left.jpeg")
    scan = scan_dataset(root, "tanlikesmath")
    assert scan.labels_without_file == [victim.stem]
    assert scan.files_without_label == [str(image_dir / "999_left.jpeg")]
    assert len(scan.records) == 9


def test_tanlikesmath_leaves_out_conflicting_labels(make_sample):
    root = make_sample("tanlikesmath", patients=5)
    labels = (root / LABELS).read_text().splitlines()
    image, level = labels[1].split(",")
    (root / LABELS).write_text("\n".join([*labels, f"{image},{(int(level) + 1) % 5}"]) + "\n")
    scan = scan_dataset(root, "tanlikesmath")
    assert scan.conflicting_labels == [image]
    assert image not in set(scan.records["image_id"])


def test_sovitrath_maps_class_folders_in_clinical_order(make_sample):
    root = make_sample("sovitrath", patients=10)
    scan = scan_dataset(root, "sovitrath")
    records = scan.records
    assert len(records) == 20
    assert (records["patient_id"] == records["image_id"]).all()
    assert (records["eye"] == "").all()
    for record in records.itertuples():
        # Alphabetical order would put Mild first and Severe before Proliferate_DR's grade.
        assert Path(record.path).parent.name == SOVITRATH_CLASS_FOLDERS[record.grade]
    assert set(records["grade"]) == {0, 1, 2, 3, 4}


def test_sovitrath_ignores_other_files_and_reports_unknown_folders(make_sample):
    root = make_sample("sovitrath", patients=5)
    image_dir = root / SOVITRATH_IMAGE_DIR
    (image_dir / "Mild" / "Thumbs.db").write_bytes(b"\0")
    (image_dir / "export.pkl").write_bytes(b"\0")
    (image_dir / "extra").mkdir()
    scan = scan_dataset(root, "sovitrath")
    assert len(scan.records) == 10
    assert scan.unknown_folders == ["extra"]
    assert scan.ignored_non_image_files == 1


# --- error messages -------------------------------------------------------------------------------


def layout_error(root, dataset_type) -> str:
    with pytest.raises(DatasetLayoutError) as caught:
        scan_dataset(root, dataset_type)
    return str(caught.value)


def test_unknown_dataset_type(make_sample):
    message = layout_error(make_sample(patients=5), "eyepacs")
    assert "dataset.type" in message and "'eyepacs'" in message
    assert all(known in message for known in ("tanlikesmath", "sovitrath"))


def test_missing_root(tmp_path):
    message = layout_error(tmp_path / "nowhere", "tanlikesmath")
    assert str(tmp_path / "nowhere") in message


def test_tanlikesmath_without_image_folder_names_path_and_contents(tmp_path):
    (tmp_path / "resized_train").mkdir()
    (tmp_path / "readme.md").write_text("")
    message = layout_error(tmp_path, "tanlikesmath")
    assert str(tmp_path / TANLIKESMATH_IMAGE_DIR) in message
    assert "(resized_train)" in message and "(1 .md)" in message  # what it found there


def test_tanlikesmath_on_sovitrath_data_suggests_the_other_type(make_sample):
    root = make_sample("sovitrath", patients=5)
    message = layout_error(root, "tanlikesmath")
    assert str(root / TANLIKESMATH_IMAGE_DIR) in message
    assert "dataset.type=sovitrath?" in message


def test_sovitrath_on_tanlikesmath_data_suggests_the_other_type(make_sample):
    message = layout_error(make_sample("tanlikesmath", patients=5), "sovitrath")
    assert str(SOVITRATH_IMAGE_DIR) in message
    assert "dataset.type=tanlikesmath?" in message


def test_tanlikesmath_folder_without_images_counts_what_is_there(tmp_path):
    image_dir = tmp_path / TANLIKESMATH_IMAGE_DIR
    image_dir.mkdir(parents=True)
    for i in range(3):
        (image_dir / f"{i}_left.tif").write_bytes(b"\0")
    message = layout_error(tmp_path, "tanlikesmath")
    assert "(.jpeg/.jpg/.png)" in message and "(3 .tif)" in message  # sought and found


def test_tanlikesmath_images_in_class_folders_suggests_sovitrath(tmp_path):
    (tmp_path / TANLIKESMATH_IMAGE_DIR / "No_DR").mkdir(parents=True)
    message = layout_error(tmp_path, "tanlikesmath")
    assert "dataset.type=sovitrath?" in message


def test_root_one_level_too_deep_says_where_to_point(make_sample):
    root = make_sample("tanlikesmath", patients=5)
    message = layout_error(root / "resized_train", "tanlikesmath")
    # Pinned in full: the most common mistake with one's own data, and its fix.
    deep = root / "resized_train"
    assert message == (
        f"dataset.type=tanlikesmath expects the images in {deep / TANLIKESMATH_IMAGE_DIR}, but "
        f"that folder does not exist. Found in {deep}: 1 folders (resized_train) and 1 files "
        f"(1 .csv). dataset.root should be the folder above it: {root}.")


def test_missing_labels_csv_names_both_places(make_sample):
    root = make_sample("tanlikesmath", patients=5)
    (root / LABELS).rename(root / "labels_old.csv")
    message = layout_error(root, "tanlikesmath")
    assert str(root / LABELS) in message and str(root / "trainLabels.csv") in message
    assert "labels_old.csv" in message


def test_labels_csv_with_wrong_columns(make_sample):
    root = make_sample("tanlikesmath", patients=5)
    (root / LABELS).write_text("id_code,diagnosis\n10_left,0\n")
    message = layout_error(root, "tanlikesmath")
    assert str(root / LABELS) in message
    assert all(column in message for column in ("image,level", "id_code", "diagnosis"))


def test_labels_csv_with_bad_levels(make_sample):
    root = make_sample("tanlikesmath", patients=5)
    (root / LABELS).write_text("image,level\n10_left,7\n10_right,severe\n")
    message = layout_error(root, "tanlikesmath")
    assert str(root / LABELS) in message
    assert "10_left='7'" in message and "10_right='severe'" in message


def test_labels_that_match_no_file(make_sample):
    root = make_sample("tanlikesmath", patients=5)
    (root / LABELS).write_text("image,level\nfoo,0\nbar,1\n")
    message = layout_error(root, "tanlikesmath")
    assert "'bar'" in message and "_left'" in message


def test_sovitrath_without_class_folders_lists_what_it_found(tmp_path):
    image_dir = tmp_path / SOVITRATH_IMAGE_DIR
    for name in ("0", "1", "2"):
        (image_dir / name).mkdir(parents=True)
    message = layout_error(tmp_path, "sovitrath")
    assert all(name in message for name in SOVITRATH_CLASS_FOLDERS)
    assert str(image_dir) in message and "(0, 1, 2)" in message  # the folders it found


def test_sovitrath_with_empty_class_folders(tmp_path):
    for name in SOVITRATH_CLASS_FOLDERS:
        (tmp_path / SOVITRATH_IMAGE_DIR / name).mkdir(parents=True)
    message = layout_error(tmp_path, "sovitrath")
    assert str(tmp_path / SOVITRATH_IMAGE_DIR / "No_DR") in message  # an empty class folder
