"""The training report: figures and one self-contained HTML page, from ``training_summary`` alone.

Kedro-free: the ``ensemble`` pipeline calls these two functions as nodes.
"""

from qsight_pipeline.reporting.figures import report_figures
from qsight_pipeline.reporting.html import render_report_html

__all__ = ["render_report_html", "report_figures"]
