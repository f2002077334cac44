"""Nodes of the ``quantum_hardware`` pipeline. They read the feature cache and the trained quantum
head (and, when present, the complete checkpoint, the study summary and earlier job ids)."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

# Only pydantic at import time: qiskit, torch and matplotlib load when a node runs.
from qsight_pipeline.config.quantum_hardware import QuantumHardwareParams
from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.files import lineage
from qsight_pipeline.files.plain import to_plain

logger = logging.getLogger(__name__)


def _head_on_cache(
    quantum_training_data: dict[str, Any], quantum_head: dict[str, Any],
    params: QuantumHardwareParams, complete_checkpoint: dict[str, Any] | None = None,
    max_images: int | None = None,
) -> Any:
    # lazy: kept out of kedro start-up
    from qsight_pipeline.data.feature_cache import check_feature_cache
    from qsight_pipeline.hardware.evaluate import HeadOnCache

    check_feature_cache(quantum_training_data)
    lineage.quantum_head_for_feature_cache(quantum_head, quantum_training_data, None)
    if not quantum_head.get("enabled"):
        raise ArtifactError(
            "quantum_head.pth holds no quantum head (it was trained with quantum.enabled: false). "
            "Train one with `kedro run --pipelines quantum --params quantum.enabled=true`."
        )
    return HeadOnCache(
        quantum_training_data, quantum_head, params.split, max_images or params.max_images,
        complete_checkpoint,
    )


def submit_hardware_jobs(
    quantum_training_data: dict[str, Any], quantum_head: dict[str, Any],
    quantum_hardware: QuantumHardwareParams, quantum_hardware_jobs_if_any: dict[str, Any] | None,
) -> dict[str, Any]:
    """With ``ibm_runtime.backend`` set: log the estimated QPU time, submit the job in a Batch
    (or find it, to resume) and record its id. Otherwise the earlier record is kept as it was."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.hardware import runtime

    previous = quantum_hardware_jobs_if_any or {"format": runtime.JOBS_FORMAT, "jobs": []}
    if quantum_hardware.ibm_runtime.backend is None:
        return previous
    data = _head_on_cache(
        quantum_training_data, quantum_head, quantum_hardware,
        max_images=quantum_hardware.ibm_runtime.max_images,
    )
    record, job = runtime.submit(data, quantum_hardware, previous)
    _PENDING[record["current"]] = job
    return record


# Jobs submitted in this process (local testing mode jobs cannot be fetched back by id).
_PENDING: dict[Any, Any] = {}


def evaluate_quantum_hardware(
    quantum_training_data: dict[str, Any], quantum_head: dict[str, Any],
    quantum_hardware: QuantumHardwareParams, complete_checkpoint_if_any: dict[str, Any] | None,
    quantum_hardware_jobs: dict[str, Any],
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The tidy table (one row per condition x seed), a context for the summary (kept in
    memory) and the transpiled circuit drawn per device."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.hardware import evaluate, runtime, summary

    table, context = evaluate.evaluate_hardware(
        quantum_training_data, quantum_head, quantum_hardware, complete_checkpoint_if_any
    )
    ibm = quantum_hardware.ibm_runtime
    if ibm.backend is not None:
        data = _head_on_cache(
            quantum_training_data, quantum_head, quantum_hardware, complete_checkpoint_if_any,
            max_images=ibm.max_images,
        )
        current = quantum_hardware_jobs["current"]
        entry = next(e for e in quantum_hardware_jobs["jobs"] if e["job_id"] == current)
        job = _PENDING.get(entry["job_id"])
        if job is None:
            _, service = runtime.resolve_backend(ibm)
            if service is None:
                raise ArtifactError(
                    f"Job {entry['job_id']} ran in local testing mode in another process and "
                    "cannot be collected by its id; run the pipeline again to submit it anew."
                )
            job = service.job(entry["job_id"])
        logger.info("Waiting for job %s on %s ...", entry["job_id"], entry["backend"])
        rows = runtime.rows_from_result(data, job.result(), entry, quantum_hardware)
        table = pd.concat([table, pd.DataFrame(rows)], ignore_index=True)[table.columns]
    return table, context, summary.circuit_figures(context.pop("circuits"))


def summarise_quantum_hardware(
    quantum_hardware_table: Any, quantum_hardware_context: dict[str, Any],
    quantum_hardware: QuantumHardwareParams, quantum_study_summary_if_any: dict[str, Any] | None,
) -> dict[str, Any]:
    # lazy: kept out of kedro start-up
    from qsight_pipeline.hardware import summary

    result = summary.summarise(
        quantum_hardware_table, quantum_hardware_context, quantum_hardware,
        quantum_study_summary_if_any,
    )
    logger.info("Quantum hardware: %s", result["headline"])
    return to_plain(result)


def draw_quantum_hardware_figures(
    quantum_hardware_table: Any, quantum_hardware_summary: dict[str, Any]
) -> dict[str, Any]:
    # lazy: kept out of kedro start-up
    from qsight_pipeline.hardware import summary

    return summary.figures(quantum_hardware_table, quantum_hardware_summary)


def add_hardware_to_report(report_html: str | None, quantum_hardware_summary: dict[str, Any]) -> str:
    """report.html with the quantum_hardware section (a page of its own when there is no report)."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.reporting.html import add_hardware_section

    return add_hardware_section(report_html, quantum_hardware_summary)
