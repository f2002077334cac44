"""Wiring of the ``quantum_hardware`` pipeline (not part of ``__default__``)."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    add_hardware_to_report,
    draw_quantum_hardware_figures,
    evaluate_quantum_hardware,
    submit_hardware_jobs,
    summarise_quantum_hardware,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=submit_hardware_jobs,
                inputs=[
                    "quantum_training_data", "quantum_head", "params:quantum_hardware",
                    "quantum_hardware_jobs_if_any",
                ],
                outputs="quantum_hardware_jobs",
                name="submit_hardware_jobs",
                namespace="quantum_hardware",
            ),
            Node(
                func=evaluate_quantum_hardware,
                inputs=[
                    "quantum_training_data", "quantum_head", "params:quantum_hardware",
                    "complete_checkpoint_if_any", "quantum_hardware_jobs",
                ],
                outputs=[
                    "quantum_hardware_table", "quantum_hardware_context",
                    "quantum_hardware_circuits",
                ],
                name="evaluate_quantum_hardware",
                namespace="quantum_hardware",
            ),
            Node(
                func=summarise_quantum_hardware,
                inputs=[
                    "quantum_hardware_table", "quantum_hardware_context",
                    "params:quantum_hardware", "quantum_study_summary_if_any",
                ],
                outputs="quantum_hardware_summary",
                name="summarise_quantum_hardware",
                namespace="quantum_hardware",
            ),
            Node(
                func=draw_quantum_hardware_figures,
                inputs=["quantum_hardware_table", "quantum_hardware_summary"],
                outputs="quantum_hardware_figures",
                name="draw_quantum_hardware_figures",
                namespace="quantum_hardware",
            ),
            Node(
                func=add_hardware_to_report,
                inputs=["report_html_if_any", "quantum_hardware_summary"],
                outputs="quantum_hardware_report_html",
                name="add_hardware_to_report",
                namespace="quantum_hardware",
            ),
        ]
    )
