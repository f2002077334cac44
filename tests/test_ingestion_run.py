"""`kedro run --pipelines ingestion` as a user runs it, in a throw-away copy of the project.

One subprocess only (Kedro starts in ~10 s); the error messages are tested in-process in
test_data_layouts.py and test_ingestion.py.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def test_kedro_run_ingestion_on_the_bundled_sample(kedro_project):
    kedro_project.run("--pipelines", "ingestion", params={"run.image_size": 32})

    manifest = pd.read_csv(kedro_project.data("03_primary/manifest.csv"), dtype={"patient_id": str})
    assert len(manifest) == 300 and set(manifest["grade"]) == {0, 1, 2, 3, 4}
    assert (manifest.groupby("patient_id")["split"].nunique() == 1).all()
    for split in ("train", "val", "test"):
        cache = np.load(kedro_project.data(f"05_model_input/image_cache_{split}.npy"), mmap_mode="r")
        assert cache.shape == ((manifest["split"] == split).sum(), 32, 32, 3)
        assert set(manifest.loc[manifest["split"] == split, "grade"]) == {0, 1, 2, 3, 4}
    report = json.loads(kedro_project.data("08_reporting/ingestion_report.json").read_text())
    assert report["images"] == 300 and report["image_size"] == 32

