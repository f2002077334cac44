"""The one-photograph page, served by Streamlit and driven in headless Chromium."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from qsight_pipeline.constants import GRADE_NAMES
from tests.chromium_cdp import CHROMIUM, Browser

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"),
]
pytest.importorskip("streamlit", reason="the inference extra (streamlit) is not installed")


# Every table on the page as lists of rows of cell texts.
TABLES = ("Array.from(document.querySelectorAll('table')).map(t => Array.from(t.rows)"
          ".map(r => Array.from(r.cells).map(c => c.innerText.trim())))")


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
        server.wait(timeout=20)


def _upload(browser: Browser, path: Path, done: str) -> str:
    browser.set_file("input[type=file]", path)
    browser.wait_for(f"document.body.innerText.includes({done!r})", timeout=120)
    return browser.text()


def test_a_photograph_is_graded_on_the_page_and_a_bad_file_is_explained(
    page_url, smoke_project, tmp_path
):
    from skimage import data

    from qsight_pipeline.inference import load_model, predict_image

    photograph = tmp_path / "retina.png"
    Image.fromarray(data.retina()).save(photograph)
    loaded = load_model(smoke_project.data("06_models/trained_model"))
    expected = predict_image(loaded, photograph)
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photograph")

    with Browser(tmp_path / "profile") as browser:
        browser.open(page_url)
        browser.wait_for("!!document.querySelector('input[type=file]')", timeout=120)
        text = _upload(browser, photograph, "Grad-CAM heatmap")
        if expected.gradable is False or expected.in_distribution is False:  # the gate stopped it
            assert "Not graded: refer for manual grading" in text
        else:
            assert f"Grade {expected.grade}: {expected.grade_name}" in text
        decision = "REFER" if expected.refer else "no referral"
        assert f"Referral decision: {decision}" in text
        assert f"threshold {loaded.referral['threshold']:.3f}" in text
        assert f"entropy {expected.entropy:.3f} nats" in text
        assert f"Needs review: {'yes' if expected.needs_review else 'no'}" in text
        # Streamlit may still be rendering the tables when the caption appears: wait for both.
        probabilities, weights = browser.wait_for(
            f"(() => {{ const t = {TABLES}; return t.length === 2 && t[1].length === 4 ? t : null; }})()"
        )
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
        images = browser.evaluate("document.querySelectorAll('img').length")
        assert images >= 2  # the photograph and its heatmap overlay

        text = _upload(browser, bad, "Cannot grade")
        assert "Cannot grade notes.txt: it is not a readable JPEG or PNG image" in text
        assert "Grad-CAM heatmap" not in text
