"""Wiring of the ``ensemble`` pipeline."""

from kedro.pipeline import Node, Pipeline

from qsight_pipeline.kedro_app.run_config import run_settings_node

from .nodes import (
    assemble_training_artifacts,
    build_checkpoint,
    calibrate_operating_point,
    choose_fusion,
    describe_model,
    draw_report_figures,
    finetune_ensemble,
    fit_gate,
    join_histories,
    render_report_html,
    summarise_training,
)


def create_pipeline(**kwargs) -> Pipeline:
    """The ensemble stage (in the ``ensemble`` namespace) and the report (``report``)."""
    return Pipeline(
        [run_settings_node(), *_ensemble_nodes(), *_artifact_nodes(), *_report_nodes()]
    )


def _ensemble_nodes() -> list[Node]:
    return [
        Node(
            func=finetune_ensemble,
            inputs=["quantum_training_data", "quantum_head", "run_config", "params:quantum"],
            outputs=["post_cache_model", "ensemble_history", "evaluation"],
            name="finetune_ensemble",
            namespace="ensemble",
        ),
        Node(
            func=choose_fusion,
            inputs=[
                "quantum_training_data", "post_cache_model", "evaluation", "run_config",
                "params:ensemble",
            ],
            outputs=["fusion", "fused_evaluation"],
            name="choose_fusion",
            namespace="ensemble",
        ),
        Node(
            func=calibrate_operating_point,
            inputs=["fused_evaluation", "params:referral"],
            outputs="calibration",
            name="calibrate_operating_point",
            namespace="ensemble",
        ),
        Node(
            func=fit_gate,
            inputs=[
                "quantum_training_data",
                "image_cache_train_if_any",
                "manifest_if_any",
                "params:gate",
            ],
            outputs="gates",
            name="fit_gate",
            namespace="ensemble",
        ),
    ]


def _artifact_nodes() -> list[Node]:
    """The guide's three artifacts, one job per node: the history, the model's description, the
    summary, the checkpoint, then the gate's figures measured with the model as saved."""
    return [
        Node(
            func=join_histories,
            inputs=["classical_history", "quantum_history", "ensemble_history"],
            outputs="stage_histories",
            name="join_histories",
            namespace="ensemble",
        ),
        Node(
            func=describe_model,
            inputs=["post_cache_model", "quantum_training_data", "calibration", "gates", "fusion"],
            outputs="model_info_draft",
            name="describe_model",
            namespace="ensemble",
        ),
        Node(
            func=summarise_training,
            inputs=[
                "stage_histories", "fused_evaluation", "model_info_draft", "parameters",
                "calibration", "fusion",
            ],
            outputs="training_summary_draft",
            name="summarise_training",
            namespace="ensemble",
        ),
        Node(
            func=build_checkpoint,
            inputs=[
                "phase1_classical_model",
                "post_cache_model",
                "quantum_training_data",
                "run_config",
                "model_info_draft",
                "training_summary_draft",
            ],
            outputs="complete_checkpoint_draft",
            name="build_checkpoint",
            namespace="ensemble",
        ),
        Node(
            func=assemble_training_artifacts,
            inputs=["complete_checkpoint_draft", "image_cache_test_if_any", "params:gate"],
            outputs=["complete_checkpoint", "model_info", "training_summary"],
            name="assemble_training_artifacts",
            namespace="ensemble",
        ),
    ]


def _report_nodes() -> list[Node]:
    return [
        Node(
            func=draw_report_figures,
            inputs="training_summary",
            outputs="report_figures",
            name="draw_report_figures",
            namespace="report",
        ),
        Node(
            func=render_report_html,
            inputs=[
                "training_summary",
                "model_info",
                "report_figures",
                "quantum_study_summary_if_any",
                "quantum_hardware_summary_if_any",
            ],
            outputs="report_html",
            name="render_report_html",
            namespace="report",
        ),
    ]
