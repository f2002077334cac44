"""The training report: figures, the self-contained HTML page, its catalog entries, and the page
as Chromium renders it."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.figure import Figure

from qsight_pipeline.constants import GRADE_NAMES
from qsight_pipeline.reporting import render_report_html, report_figures
from qsight_pipeline.reporting.html import (
    REFERABLE_METRICS,
    SCALAR_METRICS,
    format_metric,
    latency_cell_id,
    metric_cell_id,
    stage_cell_id,
)
from tests.fixtures.synthetic_training_summary import build_model_info, build_training_summary

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# What Chromium shows: the rendered text of every element with an id, and the drawn size of
# every image (0 x 0 for one the browser could not decode).
RENDERED = """() => ({
  texts: Object.fromEntries(Array.from(document.querySelectorAll('[id]'), e => [e.id, e.innerText])),
  images: Array.from(document.images, i => [i.complete, i.naturalWidth, i.naturalHeight]),
})"""


@pytest.fixture(scope="module")
def summary() -> dict:
    return build_training_summary()


@pytest.fixture(scope="module")
def figures(summary) -> dict[str, Figure]:
    return report_figures(summary)


@pytest.fixture(scope="module")
def report(summary, figures) -> str:
    return render_report_html(summary, build_model_info(), figures)


class _ElementTexts(HTMLParser):
    """Text of every element with an id, plus the src of every img."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: dict[str, str] = {}
        self.attributes: dict[str, dict[str, str]] = {}
        self.images: list[str] = []
        self._open: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if "id" in attrs:
            self._open.append(attrs["id"])
            self.texts[attrs["id"]] = ""
            self.attributes[attrs["id"]] = attrs
        else:
            self._open.append("")

    def handle_endtag(self, tag):
        if tag != "img" and self._open:
            self._open.pop()

    def handle_data(self, data):
        for element_id in self._open:
            if element_id:
                self.texts[element_id] += data


def parse(page: str) -> _ElementTexts:
    parser = _ElementTexts()
    parser.feed(page)
    return parser


def expected_cells(summary: dict) -> dict[str, str]:
    """Element id -> the text the page must show, straight from training_summary."""
    cells: dict[str, str] = {}
    for split, by_model in summary["evaluation"].items():
        for model, metrics in by_model.items():
            cells[metric_cell_id(split, model, "n")] = str(metrics["n"])
            for key, _ in (*SCALAR_METRICS, *REFERABLE_METRICS):
                cells[metric_cell_id(split, model, key)] = format_metric(metrics[key])
            for grade, recall in enumerate(metrics["per_grade_recall"]):
                cells[metric_cell_id(split, model, f"recall_{grade}")] = format_metric(recall)
    for component, stats in summary["latency_ms"].items():
        for stat in ("p50", "p95", "mean", "count"):
            cells[latency_cell_id(component, stat)] = format_metric(stats[stat])
    for stage in summary["stages"]:
        cells[stage_cell_id(stage["name"], "best_epoch")] = str(stage["best_epoch"])
        cells[stage_cell_id(stage["name"], "best_val_ensemble_kappa")] = format_metric(
            stage["best_val"]["ensemble"]["kappa"]
        )
    return cells


def test_figures_cover_every_head_split_stage_and_component(summary, figures):
    for split in ("val", "test"):
        for model in ("head_a", "head_b", "quantum_head", "ensemble"):
            assert f"confusion_{split}_{model}.png" in figures
    for stage in ("classical", "quantum", "ensemble"):
        assert f"training_curves_{stage}.png" in figures
    assert "ensemble_weights.png" in figures
    for component in summary["latency_samples_ms"]:
        assert f"latency_{component}.png" in figures
    assert all(isinstance(f, Figure) for f in figures.values())


def test_confusion_matrix_shows_grades_in_clinical_order_and_the_counts(summary, figures):
    axes = figures["confusion_test_ensemble.png"].axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == list(GRADE_NAMES)
    assert [t.get_text() for t in axes.get_yticklabels()] == list(GRADE_NAMES)
    shown = np.array([int(t.get_text()) for t in axes.texts]).reshape(5, 5)
    np.testing.assert_array_equal(shown, summary["evaluation"]["test"]["ensemble"]["confusion_matrix"])


def test_training_curves_plot_the_recorded_values(summary, figures):
    stage = summary["stages"][0]
    axes = figures[f"training_curves_{stage['name']}.png"].axes[0]  # the loss panel
    line = next(ln for ln in axes.get_lines() if ln.get_label() == "Ensemble (val)")
    assert list(line.get_ydata()) == [r["val"]["ensemble"]["loss"] for r in stage["history"]]
    labels = {ln.get_label() for ln in axes.get_lines()}
    assert "Quantum head (val)" not in labels  # masked in the classical stage


def test_without_quantum_head_nothing_mentions_it():
    summary = build_training_summary(quantum_enabled=False)
    figures = report_figures(summary)
    assert not [name for name in figures if "quantum_head" in name]
    page = parse(render_report_html(summary, build_model_info(), figures))
    assert metric_cell_id("test", "quantum_head", "accuracy") not in page.texts
    assert page.texts[metric_cell_id("test", "head_a", "accuracy")]


def test_every_number_on_the_page_equals_the_summary(summary, report):
    page = parse(report)
    for element_id, text in expected_cells(summary).items():
        assert page.texts.get(element_id, "<missing>").strip() == text, element_id
    assert page.attributes[metric_cell_id("test", "ensemble", "accuracy")]["data-value"] == repr(
        summary["evaluation"]["test"]["ensemble"]["accuracy"]
    )


def test_report_is_self_contained(figures, report):
    page = parse(report)
    assert len(page.images) == len(figures)
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", report)
    assert "How to read this report" in report


def test_numbers_are_formatted_the_same_whatever_their_type():
    assert format_metric(0.123456) == format_metric(np.float32(0.123456)) == "0.1235"
    assert format_metric(np.int64(60)) == format_metric(60) == "60"
    assert format_metric(None) == "n/a"


def test_missing_metrics_show_as_not_available(summary):
    summary = {**summary, "evaluation": {"test": {"ensemble": {
        **summary["evaluation"]["test"]["ensemble"], "referable_auc": None,
        "per_grade_recall": [0.5, None, 0.25, 1.0, 0.0],
    }}}}
    page = parse(render_report_html(summary, {}, {}))
    assert page.texts[metric_cell_id("test", "ensemble", "referable_auc")] == "n/a"
    assert page.texts[metric_cell_id("test", "ensemble", "recall_1")] == "n/a"
    assert page.texts[metric_cell_id("test", "ensemble", "recall_2")] == "0.2500"


def test_catalog_entries_write_pngs_and_html(tmp_path, summary, figures, report):
    from kedro.io import DataCatalog

    config = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog_reporting.yml").read_text())
    for name, entry in config.items():
        assert entry["metadata"]["kedro-viz"]["layer"] == "reporting", name
    config["report_figures"]["dataset"]["path"] = str(tmp_path / "figures")
    config["report_html"]["filepath"] = str(tmp_path / "report.html")
    catalog = DataCatalog.from_config(config)

    catalog.save("report_figures", figures)
    catalog.save("report_html", report)
    written = sorted(p.name for p in (tmp_path / "figures").iterdir() if p.name[0] != ".")
    assert written == sorted(figures)
    assert (tmp_path / "figures" / "confusion_val_ensemble.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the HTML node receives the very figures the PNGs were written from
    assert catalog.load("report_figures") is figures
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == report


def rendered(page, url: str) -> dict:
    """Open ``url`` in Chromium (pytest-playwright's ``page``); :data:`RENDERED` once it loaded."""
    page.goto(url, wait_until="load")
    return page.evaluate(RENDERED)


def assert_shows_the_summary(shown: dict, summary: dict, figures: int) -> None:
    """Every number of ``summary`` in its cell, as the user reads it, and every figure drawn."""
    for element_id, text in expected_cells(summary).items():
        assert shown["texts"].get(element_id, "<missing>").strip() == text, element_id
    assert len(shown["images"]) == figures
    assert all(done and width > 0 and height > 0 for done, width, height in shown["images"])


def assert_screenshot(page, least_bytes: int = 20_000) -> None:
    """A full-page screenshot is a PNG with something drawn on it, not a blank page."""
    page.set_viewport_size({"width": 1280, "height": 2400})
    png = page.screenshot(full_page=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > least_bytes


@pytest.mark.slow
def test_chromium_renders_the_numbers_of_the_summary(page, tmp_path, summary, report):
    page_file = tmp_path / "report.html"
    page_file.write_text(report, encoding="utf-8")
    shown = rendered(page, page_file.as_uri())
    assert_shows_the_summary(shown, summary, len(report_figures_names(report)))
    assert_screenshot(page)


def report_figures_names(report: str) -> list[str]:
    return re.findall(r'<figure id="figure-([^"]+)"', report)
