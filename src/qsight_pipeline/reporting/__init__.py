"""The training report: figures and one self-contained HTML page, from ``training_summary`` alone.

Kedro-free: the ``ensemble`` pipeline calls these two functions as nodes. They are imported on
first use, so that the tracking hooks can use :mod:`.tracking` without loading matplotlib.
"""

from __future__ import annotations

from qsight_pipeline.lazy_exports import lazy_getattr

_EXPORTS = {
    "report_figures": "qsight_pipeline.reporting.figures",
    "render_report_html": "qsight_pipeline.reporting.html",
}
__all__ = sorted(_EXPORTS)


# Imported on first use: `kedro` commands import this package and need not load torch.
__getattr__ = lazy_getattr(__name__, _EXPORTS)
