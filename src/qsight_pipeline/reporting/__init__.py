"""The training report: figures and one self-contained HTML page, from ``training_summary`` alone.

Kedro-free: the ``ensemble`` pipeline calls these two functions as nodes. They are imported on
first use, so that the tracking hooks can use :mod:`.tracking` without loading matplotlib.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "report_figures": "qsight_pipeline.reporting.figures",
    "render_report_html": "qsight_pipeline.reporting.html",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'qsight_pipeline.reporting' has no attribute {name!r}")
