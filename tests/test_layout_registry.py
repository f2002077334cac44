"""Dataset layouts register themselves: a third layout is one class, and ingestion runs on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from qsight_pipeline.data.layouts import (
    DatasetLayout,
    DatasetLayoutError,
    LayoutScan,
    base,
    get_layout,
    layout_names,
    register_layout,
)
from qsight_pipeline.data.layouts.base import list_images, records_frame
from qsight_pipeline.data.sample import generate_sample
from tests.test_ingestion import SIZE, run_ingestion


@pytest.fixture
def toy_layout(monkeypatch):
    """A third layout, ``toy_flat``: ``<patient>_<eye>_g<grade>.png`` files in one folder."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # forgotten after the test

    @register_layout("toy_flat")
    class ToyFlatLayout(DatasetLayout):
        def scan(self, root: Path) -> LayoutScan:
            images, ignored = list_images(root)
            if not images:
                raise DatasetLayoutError(f"dataset.type=toy_flat found no images in {root}")
            rows = []
            for path in images:
                patient, eye, grade = path.stem.split("_")
                rows.append((path.stem, patient, eye, int(grade[1:]), str(path)))
            return LayoutScan("toy_flat", root, records_frame(rows), ignored_non_image_files=ignored)

        def write_sample_image(self, out_dir, sample, jpeg_quality):
            image_id = f"{sample.patient_id}_{sample.eye}_g{sample.grade}"
            path = out_dir / f"{image_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            sample.image.save(path)
            return image_id, str(sample.patient_id), sample.eye, sample.grade, str(path)

    return ToyFlatLayout


def test_a_registered_layout_is_written_and_ingested_by_name(toy_layout, tmp_path):
    assert layout_names()[:2] == ("tanlikesmath", "sovitrath") and "toy_flat" in layout_names()
    root = tmp_path / "toy"
    written = generate_sample(root, layout="toy_flat", patients=10, size=SIZE)
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{i}.png" for i in written["image_id"])

    out = run_ingestion(tmp_path, root, dataset_type="toy_flat")
    manifest = out["manifest"].sort_values("image_id").reset_index(drop=True)
    expected = written.sort_values("image_id").reset_index(drop=True)
    assert manifest["grade"].tolist() == expected["grade"].tolist()
    assert manifest["patient_id"].tolist() == expected["patient_id"].tolist()
    assert (manifest.groupby("patient_id")["split"].nunique() == 1).all()
    assert out["ingestion_report"]["dataset"]["type"] == "toy_flat"
    assert sum(len(out[f"image_cache_{s}"]) for s in ("train", "val", "test")) == 20


def test_an_unknown_layout_name_lists_every_registered_one(toy_layout):
    with pytest.raises(DatasetLayoutError) as caught:
        get_layout("eyepacs")
    message = str(caught.value)
    assert "dataset.type" in message and "'eyepacs'" in message
    assert all(name in message for name in ("tanlikesmath", "sovitrath", "toy_flat"))
    with pytest.raises(DatasetLayoutError, match="tanlikesmath.*sovitrath.*toy_flat"):
        generate_sample(Path("/nonexistent"), layout="eyepacs")


def test_a_layout_name_cannot_be_taken_twice(toy_layout):
    with pytest.raises(ValueError, match="'toy_flat'"):
        @register_layout("toy_flat")
        class Other(DatasetLayout):  # noqa: F841 - registering is the point
            pass
