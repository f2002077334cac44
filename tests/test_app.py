"""The one-photograph page: served by Streamlit and driven in headless Chromium (Playwright), and
run by Streamlit's ``AppTest`` where a browser adds nothing."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qsight_pipeline.constants import GRADE_NAMES

pytestmark = pytest.mark.slow
pytest.importorskip("streamlit", reason="the inference extra (streamlit) is not installed")

PAGE = Path(__file__).resolve().parents[1] / "src/qsight_pipeline/app/page.py"
SAMPLE = Path(__file__).resolve().parents[1] / "data/01_raw/sample/resized_train/resized_train"
# Every table on the page as lists of rows of cell texts, once both tables are complete
# (Streamlit may still be drawing them when the heatmap's caption appears).
TABLES = """() => {
  const tables = Array.from(document.querySelectorAll('table'),
    t => Array.from(t.rows, r => Array.from(r.cells, c => c.innerText.trim())));
  return tables.length === 2 && tables[1].length === 4 ? tables : null;
}"""
# True once every picture on the page is decoded and drawn (the photograph and its heatmap).
PICTURES_DRAWN = """() => document.images.length >= 2 &&
  Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def page_url(smoke_project, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("app") / "server.log"
    output_dir = smoke_project.data("06_models/trained_model")
    with log.open("w") as handle:
        server = subprocess.Popen(
            [sys.executable, "-m", "qsight_pipeline.app", "--output-dir", str(output_dir),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=handle, stderr=subprocess.STDOUT, env=smoke_project.environment(),
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"the page never came up:\n{log.read_text()[-3000:]}")
                time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:  # a loaded machine: Streamlit's shutdown is slow
            server.kill()
            server.wait(timeout=20)


def _upload(page, path: Path, shown: str, gone: str = "") -> str:
    """Choose ``path`` in the file input as a user would; the page's text once it shows ``shown``
    (and no longer ``gone``, left from the previous photograph)."""
    page.set_input_files("input[type=file]", path)
    page.wait_for_function(
        "([shown, gone]) => document.body.innerText.includes(shown) && "
        "!(gone && document.body.innerText.includes(gone))", arg=[shown, gone],
    )
    return page.inner_text("body")


def test_a_photograph_is_graded_on_the_page_and_a_bad_file_is_explained(
    page_url, smoke_project, page, tmp_path
):
    from skimage import data

    from qsight_pipeline.inference import load_model, predict_image

    photograph = tmp_path / "retina.png"
    Image.fromarray(data.retina()).save(photograph)
    loaded = load_model(smoke_project.data("06_models/trained_model"))
    expected = predict_image(loaded, photograph)
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photograph")

    page.goto(page_url)
    text = _upload(page, photograph, "Grad-CAM heatmap")
    if expected.gradable is False or expected.in_distribution is False:  # the gate stopped it
        assert "Not graded: refer for manual grading" in text
    else:
        assert f"Grade {expected.grade}: {expected.grade_name}" in text
    decision = "REFER" if expected.refer else "no referral"
    assert f"Referral decision: {decision}" in text
    assert f"threshold {loaded.referral['threshold']:.3f}" in text
    assert f"entropy {expected.entropy:.3f} nats" in text
    assert f"Needs review: {'yes' if expected.needs_review else 'no'}" in text
    probabilities, weights = page.wait_for_function(TABLES).json_value()
    assert probabilities[0][1:] == list(GRADE_NAMES)
    shown = {row[0]: row[1:] for row in probabilities[1:]}
    assert set(shown) == {"Head A (classical)", "Head B (classical)", "Quantum head", "Ensemble"}
    assert shown["Head A (classical)"] == [f"{p:.3f}" for p in expected.head_probabilities["head_a"]]
    assert shown["Ensemble"] == [f"{p:.3f}" for p in expected.ensemble_probabilities]
    assert {row[0]: row[1] for row in weights[1:]} == {
        label: f"{expected.gate_weights[head]:.3f}"
        for head, label in (("head_a", "Head A (classical)"), ("head_b", "Head B (classical)"),
                            ("quantum_head", "Quantum head"))
    }
    page.wait_for_function(PICTURES_DRAWN)  # the photograph and its heatmap overlay

    text = _upload(page, bad, "Cannot grade", gone="Grad-CAM heatmap")
    assert "Cannot grade notes.txt: it is not a readable JPEG or PNG image" in text


def test_a_gated_photograph_gets_no_grade_on_the_page(smoke_project, monkeypatch):
    """The page's own script, run by AppTest: an underexposed photograph is referred, ungraded."""
    from streamlit.testing.v1 import AppTest

    model_dir = smoke_project.data("06_models/trained_model")
    monkeypatch.setattr(sys, "argv", [str(PAGE), "--output-dir", str(model_dir)])
    app = AppTest.from_file(str(PAGE), default_timeout=300)
    app.run()
    assert not app.exception and not app.error
    photograph = np.asarray(Image.open(next(SAMPLE.glob("*.jpeg"))).convert("RGB"))
    dark = io.BytesIO()
    Image.fromarray((photograph * 0.2).astype(np.uint8)).save(dark, format="PNG")
    app.file_uploader[0].set_value(("dark.png", dark.getvalue(), "image/png")).run()
    assert not app.exception and not app.error
    assert [h.value for h in app.subheader] == ["Not graded: refer for manual grading"]
    text = "\n".join(element.value for element in (*app.markdown, *app.caption))
    assert "REFER FOR MANUAL GRADING" in text and "underexposed" in text
