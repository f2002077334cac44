"""Lineage: ``kedro viz build`` works offline; served over HTTP on localhost and loaded in headless
Chromium (Playwright), the built site shows the training stages as collapsed groups, and every
training pipeline's nodes once they are expanded.

Set ``QSIGHT_UPDATE_LINEAGE_PNG=1`` to also refresh ``docs/img/lineage.png`` (the stages) and
``docs/img/lineage-datasets.png`` (the stages with their datasets) from the screenshots.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINING_PIPELINES = ("ingestion", "classical", "features", "quantum", "ensemble")
# The namespaces kedro-viz draws as collapsible groups: one per stage, and the report.
STAGE_GROUPS = (*TRAINING_PIPELINES, "report")
QUIET_ENV = {"KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "WANDB_MODE": "offline"}
# kedro-viz keeps its UI state in localStorage["KedroViz"]; set before the site's own scripts run,
# this switches off the "new feature" hints that would cover the lineage in the screenshots.
QUIET_UI = """localStorage.setItem("KedroViz", JSON.stringify(
  {showFeatureHints: false, theme: "light", visible: {sidebar: false, miniMap: false}}));"""
# The labels of the nodes and groups drawn on the page.
LABELS = "() => Array.from(document.querySelectorAll('.pipeline-node__text'), e => e.textContent)"
# True once the drawn nodes have stayed where they are for one polling interval (layout done).
SETTLED = """() => {
  const now = Array.from(document.querySelectorAll('.pipeline-node'),
                         n => n.getAttribute('transform')).join('|');
  const settled = now !== '' && window.__qsightLayout === now;
  window.__qsightLayout = now;
  return settled;
}"""

KEDRO_VIZ_LAYERS = ("raw", "intermediate", "primary", "feature", "model_input", "models",
                    "model_output", "reporting")
def test_every_catalog_entry_has_a_kedro_viz_layer():
    entries = {}
    for path in sorted(REPO_ROOT.glob("conf/*/catalog*.yml")):
        for name, entry in (yaml.safe_load(path.read_text()) or {}).items():
            if not name.startswith("_"):
                entries[f"{path.relative_to(REPO_ROOT)}: {name}"] = entry or {}
    assert entries
    for where, entry in entries.items():
        layer = ((entry.get("metadata") or {}).get("kedro-viz") or {}).get("layer")
        assert layer in KEDRO_VIZ_LAYERS, f"{where} has kedro-viz layer {layer!r}"

def _project_copy(destination: Path) -> Path:
    """pyproject, conf (without conf/local) and src: kedro-viz refuses a symlinked src."""
    destination.mkdir()
    shutil.copy2(REPO_ROOT / "pyproject.toml", destination / "pyproject.toml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "local")
    shutil.copytree(REPO_ROOT / "conf", destination / "conf", ignore=ignore)
    (destination / "conf" / "local").mkdir()
    shutil.copytree(REPO_ROOT / "src", destination / "src", ignore=ignore)
    (destination / "data").mkdir()
    return destination


@pytest.fixture(scope="module")
def viz_site(tmp_path_factory):
    project = _project_copy(tmp_path_factory.mktemp("viz") / "project")
    env = {**os.environ, **QUIET_ENV, "COLUMNS": "200"}
    env.pop("PYTHONPATH", None)
    build = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
    site = project / "build"
    assert (site / "index.html").is_file()
    # What each registered pipeline holds, as kedro-viz exported it from the registry.
    expected = {}
    for pipeline in TRAINING_PIPELINES:
        exported = site / "api" / "pipelines" / pipeline
        assert exported.is_file(), f"kedro-viz exported no {pipeline!r} pipeline"
        nodes = json.loads(exported.read_text())["nodes"]
        expected[pipeline] = sorted(n["name"] for n in nodes if n["type"] == "task")

    handler = functools.partial(_QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", expected, project
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@pytest.mark.slow
def test_kedro_viz_can_draw_the_layers(viz_site):
    _, _, project = viz_site
    main = json.loads((project / "build" / "api" / "main").read_text())
    assert main["layers"], "kedro-viz found no consistent layer order"


def _flowchart(page, url: str) -> set[str]:
    """The labels of the nodes and groups drawn on the page at ``url``, once its layout is done."""
    page.add_init_script(QUIET_UI)
    page.goto(url)
    page.wait_for_function(SETTLED, polling=500)
    return set(page.evaluate(LABELS))


@pytest.mark.slow
def test_every_training_stage_is_a_namespace(viz_site):
    _, expected, project = viz_site
    main = json.loads((project / "build" / "api" / "main").read_text())
    groups = set(main["modular_pipelines"]) - {"__root__"}
    assert groups == set(STAGE_GROUPS)
    for stage in TRAINING_PIPELINES:  # each stage's nodes sit in its group
        children = {child["id"] for child in main["modular_pipelines"][stage]["children"]}
        tasks = {n["id"] for n in main["nodes"] if n["type"] == "task" and n["id"] in children}
        assert tasks, f"the {stage!r} group holds no node"


@pytest.mark.slow
def test_built_site_opens_with_the_stages_collapsed(viz_site, page):
    url, expected, _ = viz_site
    flowchart = _flowchart(page, f"{url}/")
    assert set(STAGE_GROUPS) <= flowchart
    assert "train_quantum_head" not in flowchart  # inside the collapsed quantum group
    assert "quantum_training_data" in flowchart  # the datasets between the stages stay visible


@pytest.mark.slow
def test_built_site_shows_every_training_pipelines_nodes_when_expanded(viz_site, page):
    url, expected, _ = viz_site
    flowchart = _flowchart(page, f"{url}/?expandAllPipelines=true")
    assert flowchart, "no flowchart nodes rendered"
    for pipeline in TRAINING_PIPELINES:
        missing = sorted(set(expected[pipeline]) - flowchart)
        assert expected[pipeline] and not missing, f"{pipeline}: {missing} not on the page"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "query", "window", "least_bytes"),
    [
        ("lineage.png", "?types=nodes", (900, 620), 15_000),  # the stages at a glance
        ("lineage-datasets.png", "", (1200, 1500), 30_000),  # with the datasets between them
    ],
)
def test_lineage_screenshot(viz_site, page, tmp_path, name, query, window, least_bytes):
    url, _, _ = viz_site
    page.set_viewport_size({"width": window[0], "height": window[1]})
    assert set(STAGE_GROUPS) <= _flowchart(page, f"{url}/{query}")
    screenshot = tmp_path / name
    page.screenshot(path=screenshot)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > least_bytes  # a drawn graph, not a blank page
    if os.environ.get("QSIGHT_UPDATE_LINEAGE_PNG") == "1":
        target = REPO_ROOT / "docs" / "img" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(screenshot, target)
