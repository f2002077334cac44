"""The synthetic fundus generator: layouts, determinism, grade structure, lesion signal, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd

from qsight_pipeline.constants import SOVITRATH_CLASS_FOLDERS
from qsight_pipeline.data.layouts import scan_dataset
from qsight_pipeline.data.sample import draw_fundus, generate_sample, main, make_anatomy


def file_bytes(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        generate_sample(tmp_path / name, patients=3, seed=seed, size=32)
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    assert file_bytes(tmp_path / "a") != file_bytes(tmp_path / "c")


def test_tanlikesmath_layout_and_grade_structure(tmp_path):
    table = generate_sample(tmp_path, "tanlikesmath", patients=40, seed=0, size=32)
    labels = pd.read_csv(tmp_path / "resized_train" / "trainLabels.csv")
    assert list(labels.columns) == ["image", "level"] and len(labels) == 80
    assert sorted(p.name for p in (tmp_path / "resized_train" / "resized_train").iterdir()) == sorted(
        f"{image}.jpeg" for image in labels["image"]
    )
    counts = table["grade"].value_counts()
    assert set(counts.index) == {0, 1, 2, 3, 4} and counts.idxmax() == 0
    eyes = table.pivot(index="patient_id", columns="eye", values="grade")
    assert ((eyes["left"] - eyes["right"]).abs() <= 1).all()


def test_sovitrath_layout(tmp_path):
    generate_sample(tmp_path, "sovitrath", patients=5, seed=0, size=32)
    image_dir = tmp_path / "gaussian_filtered_images" / "gaussian_filtered_images"
    assert sorted(p.name for p in image_dir.iterdir()) == sorted(SOVITRATH_CLASS_FOLDERS)
    pngs = list(image_dir.rglob("*.png"))
    assert len(pngs) == 10 and all(len(p.stem) == 12 for p in pngs)


def test_lesions_grow_with_the_grade():
    # Same anatomy and camera, only the grade changes: the difference from the healthy picture
    # must grow with every grade.
    differences = []
    for k in range(6):
        anatomy = make_anatomy(np.random.default_rng(k))
        images = [
            np.asarray(draw_fundus(anatomy, grade, "right", 64, np.random.default_rng(k)), float)
            for grade in range(5)
        ]
        differences.append([np.abs(image - images[0]).mean() for image in images])
    mean = np.mean(differences, axis=0)
    assert mean[0] == 0 and np.all(np.diff(mean) > 0), mean


def test_left_eye_is_the_mirrored_right_eye_anatomy():
    anatomy = make_anatomy(np.random.default_rng(0))
    right = np.asarray(draw_fundus(anatomy, 0, "right", 64, np.random.default_rng(5)), float)
    left = np.asarray(draw_fundus(anatomy, 0, "left", 64, np.random.default_rng(5)), float)
    np.testing.assert_array_equal(left[:, ::-1], right)
    assert np.abs(left - right).mean() > 3


def test_command_line(tmp_path):
    main(["--layout", "tanlikesmath", "--out", str(tmp_path), "--patients", "5", "--size", "32"])
    scan = scan_dataset(tmp_path, "tanlikesmath")
    assert len(scan.records) == 10
