"""Wiring of the ``quantum_study`` pipeline (not part of ``__default__``)."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    add_study_to_report,
    draw_quantum_study_figures,
    run_quantum_study,
    summarise_quantum_study,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=run_quantum_study,
                inputs=["quantum_training_data", "params:quantum_study"],
                outputs="quantum_study_table",
                name="run_quantum_study",
                namespace="quantum_study",
            ),
            Node(
                func=summarise_quantum_study,
                inputs=["quantum_study_table", "params:quantum_study", "quantum_metrics_if_any"],
                outputs="quantum_study_summary",
                name="summarise_quantum_study",
                namespace="quantum_study",
            ),
            Node(
                func=draw_quantum_study_figures,
                inputs="quantum_study_summary",
                outputs="quantum_study_figures",
                name="draw_quantum_study_figures",
                namespace="quantum_study",
            ),
            Node(
                func=add_study_to_report,
                inputs=["report_html_if_any", "quantum_study_summary"],
                outputs="quantum_study_report_html",
                name="add_study_to_report",
                namespace="quantum_study",
            ),
        ]
    )
