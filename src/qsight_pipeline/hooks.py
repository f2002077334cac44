"""Kedro hooks for experiment tracking: Weights & Biases and MLflow (through kedro-mlflow).

Both hooks read what the pipelines produce, by catalog name:

- ``classical_history``, ``quantum_history``, ``ensemble_history``: lists of stage summaries,
  each with its epoch records (docs/architecture.md). Logged as soon as a node outputs them.
- ``training_summary`` (dict), ``model_info`` (dict), ``report_figures`` (dict of figures) and
  ``report_html`` (str): the final results, logged when they are produced.

Neither hook changes what a run computes; a tracker that is missing or switched off is skipped.
wandb is imported only when ``tracking.wandb.enabled`` is true, mlflow only when kedro-mlflow
has an active run.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from qsight_pipeline.constants import GRADE_NAMES
from qsight_pipeline.reporting.tracking import (
    epoch_metrics,
    epoch_records,
    stage_summaries,
    stage_summary_metrics,
    summary_metrics,
)

logger = logging.getLogger(__name__)

HISTORY_DATASETS: tuple[str, ...] = ("classical_history", "quantum_history", "ensemble_history")
SUMMARY_DATASET = "training_summary"
MODEL_INFO_DATASET = "model_info"
FIGURES_DATASET = "report_figures"
REPORT_DATASET = "report_html"
WANDB_MODES: tuple[str, ...] = ("online", "offline", "disabled")
# The quantum study's outputs; their catalog entries carry ``metadata: {qsight: {track: ...}}``
# (table, json, figures), the kind each hook logs them as.
STUDY_TRACKED: dict[str, str] = {
    "quantum_study_table": "table",
    "quantum_study_summary": "json",
    "quantum_study_figures": "figures",
}


def _base_name(dataset_name: str) -> str:
    """``training_summary`` for ``training_summary`` and for a namespaced ``ns.training_summary``."""
    return dataset_name.rsplit(".", 1)[-1]


def _is_history(dataset_name: str) -> bool:
    return _base_name(dataset_name) in HISTORY_DATASETS


class _EpochLog:
    """Remembers which (stage, epoch) records were logged, so each is logged once.

    Histories arrive per pipeline and again inside ``training_summary``; the global step counts
    epochs across stages in the order they were first seen, so tracker steps only go up.
    """

    def __init__(self) -> None:
        self.seen: set[tuple[str, Any]] = set()
        self.step = 0

    def new_records(self, stages: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
        fresh = []
        for record in epoch_records(stages):
            key = (str(record.get("stage")), record.get("epoch"))
            if key in self.seen:
                continue
            self.seen.add(key)
            self.step += 1
            fresh.append((self.step, record))
        return fresh


def wandb_settings(parameters: dict[str, Any]) -> dict[str, Any]:
    """``tracking.wandb`` from the run's parameters, checked, with defaults filled in.

    Raises:
        ValueError: ``tracking.wandb.mode`` is not one of online, offline, disabled, or
            ``tracking.wandb.tags`` is neither a list nor a comma-separated string.
    """
    settings = dict(((parameters or {}).get("tracking") or {}).get("wandb") or {})
    settings.setdefault("enabled", False)
    settings.setdefault("project", "qsight")
    settings.setdefault("entity", None)
    settings.setdefault("run_name", None)
    settings.setdefault("mode", "online")
    settings.setdefault("tags", [])
    settings.setdefault("dir", None)
    mode = settings["mode"]
    if mode not in WANDB_MODES:
        raise ValueError(
            f"tracking.wandb.mode is {mode!r}; use one of {', '.join(WANDB_MODES)} "
            "(set it in conf/base/parameters_tracking.yml or with "
            "`kedro run --params tracking.wandb.mode=offline`)."
        )
    tags = settings["tags"] or []
    if isinstance(tags, str):  # "smoke" from --params, or "smoke, cpu" in a YAML file
        tags = [tag.strip() for tag in tags.split(",") if tag.strip()]
    if not isinstance(tags, list | tuple):
        raise ValueError(f"tracking.wandb.tags must be a list of strings, got {tags!r}.")
    settings["tags"] = [str(tag) for tag in tags]
    settings["enabled"] = bool(settings["enabled"])
    return settings


def _expand_confusion(matrix: list[list[int]]) -> tuple[list[int], list[int]]:
    """(true grades, predicted grades) with one pair per counted image of a confusion matrix."""
    y_true: list[int] = []
    y_pred: list[int] = []
    for true_grade, row in enumerate(matrix):
        for predicted_grade, count in enumerate(row):
            y_true.extend([true_grade] * int(count))
            y_pred.extend([predicted_grade] * int(count))
    return y_true, y_pred


def _json_text(value: Any) -> str:
    """JSON of a node output; numpy scalars and arrays become plain numbers and lists."""
    return json.dumps(value, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


def close_mlflow_run_as_failed() -> None:
    """End the MLflow run kedro-mlflow opened, as FAILED, when a run stops in before_pipeline_run.

    Kedro calls ``on_pipeline_error`` only for errors raised after ``before_pipeline_run``, so
    without this a run refused at start would stay RUNNING in MLflow for ever.
    """
    mlflow = sys.modules.get("mlflow")  # only if something already imported it
    if mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run(status="FAILED")


class WandbHook:
    """Logs a run to Weights & Biases when ``tracking.wandb.enabled`` is true.

    Per epoch (one W&B step each, across stages): loss, accuracy and kappa per head and for the
    ensemble, average ensemble weights, uncertainty and latency. At the end: validation and test
    metrics, validation confusion matrices, latency histograms, the report's figures, stage
    summaries in the run summary, and ``training_summary.json``, ``model_info.json`` and
    ``report.html`` as one artifact.
    """

    def __init__(self) -> None:
        self._settings: dict[str, Any] = {"enabled": False}
        self._parameters: dict[str, Any] = {}
        self._project_path: Path | None = None
        self._reset()

    def _reset(self) -> None:
        self._wandb: Any = None
        self._run: Any = None
        self._epochs = _EpochLog()
        self._final: dict[str, Any] = {}

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._parameters = dict(context.params)
        self._settings = wandb_settings(self._parameters)
        self._project_path = Path(context.project_path)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._reset()
        if not self._settings.get("enabled"):
            return
        try:
            import wandb
        except ImportError:
            logger.warning(
                "tracking.wandb.enabled is true but wandb is not installed; this run is not "
                "logged to W&B. Install it with `pip install 'qsight_pipeline[tracking]'`."
            )
            return
        settings = self._settings
        mode = os.environ.get("WANDB_MODE") or settings["mode"]
        if mode != settings["mode"]:
            logger.info("WANDB_MODE=%s overrides tracking.wandb.mode=%s", mode, settings["mode"])
        directory = settings["dir"] or os.environ.get("WANDB_DIR") or self._project_path or "."
        Path(directory).mkdir(parents=True, exist_ok=True)
        pipelines = run_params.get("pipeline_names") or [run_params.get("pipeline_name")]
        job_type = "+".join(name for name in pipelines if name) or "__default__"
        self._wandb = wandb
        try:
            self._run = wandb.init(
                project=settings["project"],
                entity=settings["entity"],
                name=settings["run_name"],
                mode=mode,
                tags=settings["tags"],
                dir=str(directory),
                job_type=job_type,
                config=self._parameters,
                reinit="finish_previous",
            )
        except Exception as error:
            # Before any work is done: better to stop now than to train for hours untracked.
            close_mlflow_run_as_failed()
            raise RuntimeError(
                f"W&B could not start a run in {mode} mode ({error}). Run `wandb login` (or set "
                "WANDB_API_KEY), or set tracking.wandb.mode=offline, or "
                "tracking.wandb.enabled=false."
            ) from error
        logger.info("W&B run %s started (mode %s)", getattr(self._run, "id", "?"), mode)

    @hook_impl
    def after_node_run(self, node: Any, outputs: dict[str, Any]) -> None:
        if self._run is None:
            return
        try:
            self._record_outputs(outputs)
        except Exception:  # a tracker hiccup must not throw away a training run
            logger.warning("W&B logging after node %s failed; the run goes on",
                           getattr(node, "name", node), exc_info=True)

    def _record_outputs(self, outputs: dict[str, Any]) -> None:
        for name, value in outputs.items():
            base = _base_name(name)
            if _is_history(name):
                stages = stage_summaries(value)
                self._log_epochs(stages)
                self._run.summary.update(
                    {k: v for stage in stages for k, v in stage_summary_metrics(stage).items()}
                )
            elif base in (SUMMARY_DATASET, MODEL_INFO_DATASET, FIGURES_DATASET, REPORT_DATASET,
                          *STUDY_TRACKED):
                self._final[base] = value
                if base == SUMMARY_DATASET:
                    self._log_epochs(value.get("stages") or [])

    def _log_epochs(self, stages: list[dict[str, Any]]) -> None:
        for step, record in self._epochs.new_records(stages):
            metrics: dict[str, Any] = dict(epoch_metrics(record))
            metrics["epoch"] = step
            metrics[f"{record['stage']}/epoch"] = record.get("epoch")
            self._run.log(metrics, step=step)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if self._run is None:
            return
        try:
            self._log_final()
        except Exception:
            logger.warning("W&B logging of the final results failed", exc_info=True)
        finally:
            self._run.finish()
            self._reset()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any,
                          catalog: Any) -> None:
        if self._run is not None:
            logger.warning("Pipeline failed; closing the W&B run as failed")
            self._run.finish(exit_code=1)
            self._reset()

    def _log_final(self) -> None:
        wandb = self._wandb
        summary = self._final.get(SUMMARY_DATASET)
        step = self._epochs.step + 1
        final: dict[str, Any] = {}
        if summary:
            self._run.summary.update(summary_metrics(summary))
            self._run.summary["stage_summaries"] = [
                {k: v for k, v in stage.items() if k not in ("history", "latency_samples_ms")}
                for stage in summary.get("stages") or []
            ]
            for model, metrics in ((summary.get("evaluation") or {}).get("val") or {}).items():
                matrix = metrics.get("confusion_matrix")
                if matrix:
                    y_true, y_pred = _expand_confusion(matrix)
                    final[f"val_confusion_matrix/{model}"] = wandb.plot.confusion_matrix(
                        y_true=y_true, preds=y_pred, class_names=list(GRADE_NAMES),
                        title=f"{model}: validation confusion matrix",
                    )
            for component, samples in (summary.get("latency_samples_ms") or {}).items():
                if samples:
                    final[f"latency_ms/{component}"] = wandb.Histogram(samples)
        figures = self._final.get(FIGURES_DATASET) or {}
        if figures:
            from PIL import Image

            from qsight_pipeline.reporting.figures import figure_png

            for name, figure in figures.items():
                image = Image.open(io.BytesIO(figure_png(figure)))
                final[f"report/{Path(name).stem}"] = wandb.Image(image, caption=name)
        final.update(self._study_entries())
        if final:
            self._run.log(final, step=step)
        self._log_artifact()

    def _study_entries(self) -> dict[str, Any]:
        """The quantum study's table, figures and headline, when this run made them."""
        entries: dict[str, Any] = {}
        for name, kind in STUDY_TRACKED.items():
            value = self._final.get(name)
            if value is None:
                continue
            if kind == "table":
                entries["quantum_study/table"] = self._wandb.Table(dataframe=value)
            elif kind == "figures":
                for figure_name, figure in value.items():
                    entries[f"quantum_study/{Path(figure_name).stem}"] = self._wandb.Image(figure)
            else:
                self._run.summary["quantum_study/headline"] = value.get("headline")
        return entries

    def _log_artifact(self) -> None:
        files = {
            "quantum_study_summary.json": self._final.get("quantum_study_summary"),
            "training_summary.json": self._final.get(SUMMARY_DATASET),
            "model_info.json": self._final.get(MODEL_INFO_DATASET),
            "report.html": self._final.get(REPORT_DATASET),
        }
        files = {name: content for name, content in files.items() if content is not None}
        if not files:
            return
        with tempfile.TemporaryDirectory(prefix="qsight-wandb-") as folder:
            artifact = self._wandb.Artifact(
                "qsight-training-report", type="report",
                description="training_summary.json, model_info.json and the HTML report",
            )
            for name, content in files.items():
                path = Path(folder) / name
                text = content if isinstance(content, str) else _json_text(content)
                path.write_text(text, encoding="utf-8")
                artifact.add_file(str(path), name=name)
            self._run.log_artifact(artifact)


class MlflowTrackingHook:
    """Adds per-epoch metrics and the final artifacts to the MLflow run kedro-mlflow opened.

    kedro-mlflow starts a run per ``kedro run`` and logs the node parameters; this hook adds
    the epoch metrics of every stage (with ``step`` = epoch in the stage), the stage summaries,
    the final val/test metrics and latency, and the artifacts: ``training_summary.json``,
    ``model_info.json``, ``report.html`` and the report's figures (PNG). Off with
    ``tracking.mlflow.enabled: false``, and idle when no MLflow run is active.
    """

    def __init__(self) -> None:
        self._enabled = True
        self._reset()

    def _reset(self) -> None:
        self._run_id: str | None = None
        self._client: Any = None
        self._epochs = _EpochLog()

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        tracking = (dict(context.params).get("tracking") or {}).get("mlflow") or {}
        self._enabled = bool(tracking.get("enabled", True))

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._reset()

    def _active_run(self) -> tuple[Any, str] | None:
        if not self._enabled:
            return None
        if self._run_id is None:
            try:
                import mlflow
            except ImportError:
                return None
            run = mlflow.active_run()
            if run is None:
                return None
            self._run_id = run.info.run_id
            self._client = mlflow.MlflowClient()
            logger.info("Logging epoch metrics and artifacts to MLflow run %s", self._run_id)
        return self._client, self._run_id

    @hook_impl
    def after_node_run(self, node: Any, outputs: dict[str, Any]) -> None:
        wanted = [
            name for name in outputs
            if _is_history(name)
            or _base_name(name) in (SUMMARY_DATASET, MODEL_INFO_DATASET, FIGURES_DATASET,
                                    REPORT_DATASET, *STUDY_TRACKED)
        ]
        if not wanted:
            return
        try:
            active = self._active_run()
            if active is not None:
                self._record_outputs(*active, {name: outputs[name] for name in wanted})
        except Exception:  # a tracker hiccup must not throw away a training run
            logger.warning("MLflow logging after node %s failed; the run goes on",
                           getattr(node, "name", node), exc_info=True)

    def _record_outputs(self, client: Any, run_id: str, outputs: dict[str, Any]) -> None:
        for name, value in outputs.items():
            base = _base_name(name)
            if _is_history(name):
                stages = stage_summaries(value)
                self._log_epochs(client, run_id, stages)
                self._log_metrics(client, run_id, {
                    k: v for stage in stages for k, v in stage_summary_metrics(stage).items()
                })
            elif base == SUMMARY_DATASET:
                self._log_epochs(client, run_id, value.get("stages") or [])
                self._log_metrics(client, run_id, summary_metrics(value))
                client.log_text(run_id, _json_text(value), "training_summary.json")
            elif base == MODEL_INFO_DATASET:
                client.log_text(run_id, _json_text(value), "model_info.json")
            elif base == REPORT_DATASET:
                client.log_text(run_id, value, "report/report.html")
            elif base == FIGURES_DATASET:
                for figure_name, figure in (value or {}).items():
                    client.log_figure(run_id, figure, f"report/figures/{figure_name}")
            elif base in STUDY_TRACKED:
                self._log_study(client, run_id, STUDY_TRACKED[base], value)

    @staticmethod
    def _log_study(client: Any, run_id: str, kind: str, value: Any) -> None:
        if kind == "table":
            client.log_text(run_id, value.to_csv(index=False), "quantum_study/quantum_study.csv")
        elif kind == "json":
            client.log_text(run_id, _json_text(value), "quantum_study/quantum_study_summary.json")
        else:
            for figure_name, figure in (value or {}).items():
                client.log_figure(run_id, figure, f"quantum_study/figures/{figure_name}")

    def _log_epochs(self, client: Any, run_id: str, stages: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key=key, value=value, timestamp=now, step=int(record.get("epoch") or step))
            for step, record in self._epochs.new_records(stages)
            for key, value in epoch_metrics(record).items()
        ]
        self._send(client, run_id, batch)

    def _log_metrics(self, client: Any, run_id: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._send(client, run_id, [Metric(key=k, value=v, timestamp=now, step=0)
                                    for k, v in metrics.items()])

    @staticmethod
    def _send(client: Any, run_id: str, batch: list[Any]) -> None:
        # MLflow accepts at most 1000 metrics per log_batch call.
        for start in range(0, len(batch), 1000):
            client.log_batch(run_id, metrics=batch[start:start + 1000])
