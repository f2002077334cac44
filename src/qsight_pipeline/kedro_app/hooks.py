"""Kedro hooks for experiment tracking: Weights & Biases and MLflow.

Both hooks log the node outputs whose catalog entry carries ``metadata: {qsight: {track: KIND}}``
(see :mod:`qsight_pipeline.kedro_app.tracked_outputs`), whatever the entry is called:

- ``history`` (``classical_history``, ``quantum_history``, ``ensemble_history``): lists of stage
  summaries, each with its epoch records (docs/architecture.md). Logged as soon as a node
  outputs them.
- ``summary`` (``training_summary``), ``model_info``, ``figures`` (``report_figures``, a dict of
  figures) and ``report`` (``report_html``): the final results, logged when they are produced.

Neither hook changes what a run computes; a tracker that is missing or switched off is skipped.
wandb is imported only when ``tracking.wandb.enabled`` is true, mlflow only when
``tracking.mlflow.enabled`` is true (the default) and a run starts.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl

from qsight_pipeline.config import WandbParams, validate_block
from qsight_pipeline.constants import GRADE_NAMES
from qsight_pipeline.errors import TrackingError
from qsight_pipeline.files import storage
from qsight_pipeline.files.plain import json_default, to_plain
from qsight_pipeline.kedro_app import mlflow_runs, run_checks, run_hooks, user_errors
from qsight_pipeline.kedro_app.run_guard import RunInterrupted, close_stale_mlflow_runs
from qsight_pipeline.kedro_app.tracked_outputs import TrackedOutputs
from qsight_pipeline.reporting.tracking import (
    epoch_metrics,
    epoch_records,
    stage_summaries,
    stage_summary_metrics,
    summary_metrics,
)

logger = logging.getLogger(__name__)

# File names of the final records in the W&B artifact and among the MLflow artifacts.
ARTIFACT_FILES: dict[str, str] = {
    "summary": "training_summary.json", "model_info": "model_info.json", "report": "report.html",
}


def _tracked_outputs(pipeline: Any, catalog: Any) -> TrackedOutputs:
    names = pipeline.datasets() if pipeline is not None else ()
    return TrackedOutputs(catalog, names)


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


def wandb_settings(parameters: Any) -> dict[str, Any]:
    """``tracking.wandb`` from the run's parameters, with defaults filled in. Typed parameters
    (``QSightParameters``) are read as they are; a plain mapping is validated by
    ``config.WandbParams`` (which also splits a comma-separated ``tags`` string).

    Raises:
        ConfigError: naming each bad ``tracking.wandb.*`` key.
    """
    raw = ((parameters or {}).get("tracking") or {}).get("wandb") or {}
    return validate_block(WandbParams, raw, "tracking.wandb").model_dump()


def _expand_confusion(matrix: list[list[int]]) -> tuple[list[int], list[int]]:
    """(true grades, predicted grades) with one pair per counted image of a confusion matrix."""
    y_true: list[int] = []
    y_pred: list[int] = []
    for true_grade, row in enumerate(matrix):
        for predicted_grade, count in enumerate(row):
            y_true.extend([true_grade] * int(count))
            y_pred.extend([predicted_grade] * int(count))
    return y_true, y_pred


def _wandb_run_folder(run: Any) -> Path | None:
    """wandb's folder of ``run`` (``wandb/offline-run-<time>-<id>``), if it has one."""
    files = getattr(run, "dir", None)
    return Path(files).parent if files else None


def _json_text(value: Any) -> str:
    """JSON of a node output; numpy scalars and arrays become plain numbers and lists."""
    return json.dumps(value, indent=2, default=json_default)


class _TrackerHook:
    """What both trackers share: the one dispatch of a node's tracked outputs by their kind.

    A tracker implements ``_log_<kind>(name, value)`` for every kind of
    :data:`qsight_pipeline.kedro_app.tracked_outputs.TRACK_KINDS`.
    """

    def _dispatch(self, outputs: dict[str, tuple[str, Any]]) -> None:
        for name, (kind, value) in outputs.items():
            getattr(self, f"_log_{kind}")(name, value)


class WandbHook(_TrackerHook):
    """Logs a run to Weights & Biases when ``tracking.wandb.enabled`` is true.

    Per epoch (one W&B step each, across stages): loss, accuracy and kappa per head and for the
    ensemble, average ensemble weights, uncertainty and latency. At the end: validation and test
    metrics, validation confusion matrices, latency histograms, the report's figures, stage
    summaries in the run summary, and ``training_summary.json``, ``model_info.json`` and
    ``report.html`` as one artifact.
    """

    def __init__(self) -> None:
        self._settings: dict[str, Any] = {"enabled": False}
        self._parameters: Any = {}
        self._project_path: Path | None = None
        self._reset()

    def _end_folder(self) -> None:
        if getattr(self, "_run_folder", None) is not None:
            storage.end_directory(self._run_folder)
            self._run_folder = None

    def _reset(self) -> None:
        self._wandb: Any = None
        self._run: Any = None
        self._epochs = _EpochLog()
        self._final: dict[str, Any] = {}
        self._tracked = TrackedOutputs()

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        # The run checks' typed parameters: validated once, and not through context.params,
        # which would make Kedro validate every block again without the run's pipeline scope.
        self._parameters = run_checks.parameters_of(context)
        self._settings = wandb_settings(self._parameters)
        self._project_path = Path(context.project_path)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._reset()
        if not self._settings.get("enabled"):
            return
        try:
            # lazy: optional dependency
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
                config=to_plain(self._parameters),  # every block, defaults filled in
                reinit="finish_previous",
            )
        except Exception as error:
            # Before any work is done: better to stop now than to train for hours untracked.
            mlflow_runs.close_mlflow_run_as_failed()
            run_hooks.abandon_run()  # Kedro calls no other hook when this one raises
            user_errors.install()
            raise TrackingError(
                f"W&B could not start a run in {mode} mode ({error}). Run `wandb login` (or set "
                "WANDB_API_KEY), or set tracking.wandb.mode=offline, or "
                "tracking.wandb.enabled=false."
            ) from error
        # wandb has wrapped sys.excepthook with one that prints every traceback in front of
        # ours: a bad input found by a node would end in a page of traceback, then `Error: ...`.
        user_errors.install()
        logger.info("W&B run %s started (mode %s)", getattr(self._run, "id", "?"), mode)
        self._run_folder = _wandb_run_folder(self._run)
        if self._run_folder is not None:  # removed by the next run if this one is killed
            storage.journal_directory(self._run_folder)
        self._tracked = _tracked_outputs(pipeline, catalog)

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
        self._dispatch(self._tracked.select(outputs))

    # Records (e.g. the quantum study's table and summary) and the final results are kept for
    # the end of the run; histories are logged at once.
    def _log_table(self, name: str, value: Any) -> None:
        self._final.setdefault("records", {})[name] = ("table", value)

    def _log_json(self, name: str, value: Any) -> None:
        self._final.setdefault("records", {})[name] = ("json", value)

    def _log_history(self, name: str, value: Any) -> None:
        stages = stage_summaries(value)
        self._log_epochs(stages)
        self._run.summary.update(
            {k: v for stage in stages for k, v in stage_summary_metrics(stage).items()}
        )

    def _log_summary(self, name: str, value: Any) -> None:
        self._final["summary"] = value
        self._log_epochs(value.get("stages") or [])

    def _log_model_info(self, name: str, value: Any) -> None:
        self._final["model_info"] = value

    def _log_figures(self, name: str, value: Any) -> None:
        self._final["figures"] = value

    def _log_report(self, name: str, value: Any) -> None:
        self._final["report"] = value

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
            self._end_folder()
            self._reset()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any,
                          catalog: Any) -> None:
        if self._run is not None:
            logger.warning("Pipeline failed; closing the W&B run as failed")
            self._run.finish(exit_code=1)
            self._end_folder()
            self._reset()

    def _log_final(self) -> None:
        wandb = self._wandb
        summary = self._final.get("summary")
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
        figures = self._final.get("figures") or {}
        if figures:
            # lazy: kept out of kedro start-up
            from PIL import Image

            from qsight_pipeline.reporting.figures import figure_png

            for name, figure in figures.items():
                image = Image.open(io.BytesIO(figure_png(figure)))
                final[f"report/{Path(name).stem}"] = wandb.Image(image, caption=name)
        for name, (kind, value) in (self._final.get("records") or {}).items():
            if kind == "table":
                final[name] = wandb.Table(dataframe=_wandb_frame(value))
            else:
                self._run.summary[name] = value
        if final:
            self._run.log(final, step=step)
        self._log_artifact()

    def _log_artifact(self) -> None:
        files = {
            file_name: self._final[kind]
            for kind, file_name in ARTIFACT_FILES.items()
            if self._final.get(kind) is not None
        }
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


class MlflowTrackingHook(_TrackerHook):
    """One MLflow run per ``kedro run``: its parameters, per-epoch metrics and final artifacts.

    The run opens once the run checks have passed (``conf/<env>/mlflow.yml`` says where, see
    :mod:`qsight_pipeline.kedro_app.mlflow_runs`), with every parameter flattened (``model.encoder_name``,
    ``quantum.n_qubits``, ...). Then come the epoch metrics of every stage (``step`` = epoch in
    the stage), the stage summaries, the final val/test metrics and latency, and the artifacts:
    ``training_summary.json``, ``model_info.json``, ``report.html`` and the report's figures
    (PNG). The run ends FINISHED, or FAILED when the pipeline fails. Off with
    ``tracking.mlflow.enabled: false``; then mlflow is never imported.
    """

    def __init__(self) -> None:
        self._enabled = True
        self._project = Path.cwd()
        self._config: Any = None
        self._reset()

    def _reset(self) -> None:
        self._run_id: str | None = None
        self._client: Any = None
        self._epochs = _EpochLog()
        self._tracked = TrackedOutputs()

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._enabled = run_checks.parameters_of(context).tracking.mlflow.enabled
        self._project = mlflow_runs.project_root(context)
        self._config = None
        loader = getattr(context, "config_loader", None)
        if self._enabled and loader is not None:
            try:
                raw = loader["mlflow"]
            except MissingConfigException:
                raw = {}
            self._config = mlflow_runs.load_mlflow_config(raw)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._reset()
        if not self._enabled:
            return
        self._tracked = _tracked_outputs(pipeline, catalog)
        if mlflow_runs.active_run_id() is not None:
            # A run the caller opened (a notebook's `with mlflow.start_run():`): log into it.
            logger.info("Logging to the MLflow run that is already active")
            return
        names = run_params.get("pipeline_names") or ["__default__"]
        params = run_hooks.catalog_parameters(catalog)
        try:
            mlflow_runs.start_run(self._config or mlflow_runs.MlflowConfig(), self._project,
                                  "+".join(names), params)  # fmt: skip
        except Exception as error:  # an unreachable tracking server must not cost the run
            logger.warning("MLflow run could not start (%s); training goes on without MLflow",
                           error)  # fmt: skip
            return

        close_stale_mlflow_runs()  # tags this run with our pid; closes those of dead processes

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        mlflow_runs.end_run("FINISHED")  # only the run this hook opened

    @hook_impl
    def on_pipeline_error(self, error: Exception) -> None:
        mlflow_runs.end_run("KILLED" if isinstance(error, RunInterrupted) else "FAILED")

    def _active_run(self) -> tuple[Any, str] | None:
        if not self._enabled:
            return None
        if self._run_id is None:
            try:
                # lazy: optional dependency
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
        try:
            wanted = self._tracked.select(outputs)
            active = self._active_run() if wanted else None
            if active is not None:
                self._client, self._run_id = active
                self._dispatch(wanted)
        except Exception:  # a tracker hiccup must not throw away a training run
            logger.warning("MLflow logging after node %s failed; the run goes on",
                           getattr(node, "name", node), exc_info=True)

    def _log_table(self, name: str, value: Any) -> None:
        self._client.log_text(self._run_id, value.to_csv(index=False), f"tables/{name}.csv")

    def _log_json(self, name: str, value: Any) -> None:
        self._client.log_text(self._run_id, _json_text(value), f"records/{name}.json")

    def _log_history(self, name: str, value: Any) -> None:
        stages = stage_summaries(value)
        self._log_epochs(self._client, self._run_id, stages)
        self._log_metrics(self._client, self._run_id, {
            k: v for stage in stages for k, v in stage_summary_metrics(stage).items()
        })

    def _log_summary(self, name: str, value: Any) -> None:
        self._log_epochs(self._client, self._run_id, value.get("stages") or [])
        self._log_metrics(self._client, self._run_id, summary_metrics(value))
        self._client.log_text(self._run_id, _json_text(value), ARTIFACT_FILES["summary"])

    def _log_model_info(self, name: str, value: Any) -> None:
        self._client.log_text(self._run_id, _json_text(value), ARTIFACT_FILES["model_info"])

    def _log_report(self, name: str, value: Any) -> None:
        self._client.log_text(self._run_id, value, f"report/{ARTIFACT_FILES['report']}")

    def _log_figures(self, name: str, value: Any) -> None:
        _upload_figures(self._client, self._run_id, value or {})

    def _log_epochs(self, client: Any, run_id: str, stages: list[dict[str, Any]]) -> None:
        # lazy: kept out of kedro start-up
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key=key, value=value, timestamp=now, step=int(record.get("epoch") or step))
            for step, record in self._epochs.new_records(stages)
            for key, value in epoch_metrics(record).items()
        ]
        self._send(client, run_id, batch)

    def _log_metrics(self, client: Any, run_id: str, metrics: dict[str, float]) -> None:
        # lazy: kept out of kedro start-up
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._send(client, run_id, [Metric(key=k, value=v, timestamp=now, step=0)
                                    for k, v in metrics.items()])

    @staticmethod
    def _send(client: Any, run_id: str, batch: list[Any]) -> None:
        # MLflow accepts at most 1000 metrics per log_batch call.
        for start in range(0, len(batch), 1000):
            client.log_batch(run_id, metrics=batch[start:start + 1000])


def _wandb_frame(frame: Any) -> Any:
    """``frame`` with pandas' nullable integer columns (``Int64`` with ``<NA>``, e.g. the study's
    ``n_qubits`` of the baselines) as floats: ``wandb.Table`` rejects a column that mixes
    ``<NA>`` with numbers."""
    # lazy: kept out of kedro start-up
    import pandas as pd

    converted = frame.copy()
    for column in converted.columns:
        dtype = converted[column].dtype
        if pd.api.types.is_extension_array_dtype(dtype) and pd.api.types.is_numeric_dtype(dtype):
            converted[column] = converted[column].astype("float64")
    return converted


def _upload_figures(client: Any, run_id: str, figures: dict[str, Any]) -> None:
    """The PNGs already drawn for the figures folder and the page (``figure_png`` keeps them),
    logged as files: ``log_figure`` would draw every figure again."""
    # lazy: kept out of kedro start-up
    from qsight_pipeline.reporting.figures import figure_png

    with tempfile.TemporaryDirectory(prefix="qsight-figures-") as folder:
        for figure_name, figure in figures.items():
            path = Path(folder) / figure_name
            path.parent.mkdir(parents=True, exist_ok=True)
            if hasattr(figure, "savefig"):
                path.write_bytes(figure_png(figure))
            else:  # a PIL image
                figure.save(path)
            parent = Path("report/figures", figure_name).parent.as_posix()
            client.log_artifact(run_id, str(path), parent)
