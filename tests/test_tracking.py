"""Experiment tracking hooks: W&B (offline run read back from disk) and MLflow (sqlite store)."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline

from qsight_pipeline.errors import ConfigError
from qsight_pipeline.kedro_app.hooks import MlflowTrackingHook, WandbHook, wandb_settings
from qsight_pipeline.kedro_app.tracked_outputs import TRACK_KINDS, TrackedOutputs
from qsight_pipeline.reporting import render_report_html, report_figures
from qsight_pipeline.reporting.tracking import epoch_metrics, evaluation_metrics
from tests.fixtures.synthetic_training_summary import build_model_info, build_training_summary
from tests.fixtures.wandb_offline import read_offline_run

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HISTORY_NAMES = {"classical": "classical_history", "quantum": "quantum_history",
                 "ensemble": "ensemble_history"}


@pytest.fixture(scope="module")
def summary() -> dict:
    return build_training_summary()


_OUTPUTS: dict[int, list[tuple[str, dict]]] = {}


def pipeline_outputs(summary: dict) -> list[tuple[str, dict]]:
    """(node name, outputs) in the order the training pipelines produce them (drawn once)."""
    if id(summary) not in _OUTPUTS:
        steps = [
            (f"train_{stage['name']}", {HISTORY_NAMES[stage["name"]]: [stage]})
            for stage in summary["stages"]
        ]
        figures = report_figures(summary)
        report = render_report_html(summary, build_model_info(), figures)
        steps.append(("assemble", {"model_info": build_model_info(), "training_summary": summary}))
        steps.append(("draw_report_figures", {"report_figures": figures}))
        steps.append(("render_report_html", {"report_html": report}))
        _OUTPUTS[id(summary)] = steps
    return _OUTPUTS[id(summary)]


def fake_context(tmp_path: Path, tracking: dict) -> SimpleNamespace:
    from qsight_pipeline.config import RunSettings

    # `run` as Kedro hands a block that a node takes typed; `tracking` as written.
    return SimpleNamespace(params={"run": RunSettings(seed=42), "tracking": tracking},
                           project_path=tmp_path)


def project_catalog(rename: dict[str, str] | None = None) -> DataCatalog:
    """The catalog of conf/base/catalog*.yml (entries renamed as ``rename`` says); nothing is
    written through it, the hooks only read its entries' metadata."""
    config: dict = {}
    for path in sorted((PROJECT_ROOT / "conf/base").glob("catalog*.yml")):
        config.update(yaml.safe_load(path.read_text()))
    for old, new in (rename or {}).items():
        config[new] = config.pop(old)
    return DataCatalog.from_config(config)


def drive(hook, context, summary, run_params=None, catalog=None, outputs=None) -> None:
    """Call a hook the way a Kedro session would over a whole training run."""
    run_params = run_params or {"pipeline_names": ["__default__"]}
    catalog = project_catalog() if catalog is None else catalog
    hook.after_context_created(context=context)
    hook.before_pipeline_run(run_params=run_params, pipeline=None, catalog=catalog)
    for node_name, node_outputs in outputs or pipeline_outputs(summary):
        hook.after_node_run(node=SimpleNamespace(name=node_name), outputs=node_outputs)
    if hasattr(hook, "after_pipeline_run"):
        hook.after_pipeline_run(run_params=run_params, pipeline=None, catalog=catalog)


# --- parameters -----------------------------------------------------------------------------

def test_tracking_parameters_file_has_the_documented_keys():
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_tracking.yml").read_text())
    settings = wandb_settings(params)
    assert settings["enabled"] is False
    assert set(params["tracking"]["wandb"]) >= {"enabled", "project", "entity", "run_name",
                                                "mode", "tags"}
    assert params["tracking"]["mlflow"]["enabled"] is True


def _hook_warnings(caplog) -> list[str]:
    """The warnings the tracking hooks logged."""
    return [r.getMessage() for r in caplog.records
            if r.name == "qsight_pipeline.kedro_app.hooks" and r.levelno == logging.WARNING]


def test_bad_wandb_mode_names_the_parameter():
    with pytest.raises(ConfigError, match=r"tracking\.wandb\.mode.*'online'.*'offline'.*'disabled'"):
        wandb_settings({"tracking": {"wandb": {"mode": "cloud"}}})


def test_wandb_tags_from_the_command_line_are_split_on_commas():
    assert wandb_settings({"tracking": {"wandb": {"tags": "smoke, cpu"}}})["tags"] == ["smoke", "cpu"]
    with pytest.raises(ValueError, match=r"tracking\.wandb\.tags"):
        wandb_settings({"tracking": {"wandb": {"tags": 3}}})


def test_wandb_hook_rejects_a_bad_mode_when_the_context_is_created(tmp_path):
    with pytest.raises(ValueError, match=r"tracking\.wandb\.mode"):
        WandbHook().after_context_created(context=fake_context(tmp_path, {"wandb": {"mode": "x"}}))


def test_disabled_wandb_is_never_imported(tmp_path, summary, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # any `import wandb` would now fail
    drive(WandbHook(), fake_context(tmp_path, {"wandb": {"enabled": False}}), summary)
    assert not (tmp_path / "wandb").exists()


def test_missing_wandb_is_a_warning_and_the_run_goes_on(tmp_path, summary, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with caplog.at_level(logging.WARNING, logger="qsight_pipeline.kedro_app.hooks"):
        drive(WandbHook(), fake_context(tmp_path, {"wandb": {"enabled": True}}), summary)
    (warning,) = _hook_warnings(caplog)
    assert "wandb" in warning


# --- which outputs are tracked: catalog metadata, not names ----------------------------------

def test_every_tracked_kind_is_marked_in_the_project_catalog():
    tracked = TrackedOutputs(project_catalog())
    names = {"classical_history": "history", "quantum_history": "history",
             "ensemble_history": "history", "training_summary": "summary",
             "model_info": "model_info", "report_figures": "figures", "report_html": "report",
             "quantum_study_table": "table", "quantum_study_summary": "json"}
    assert {name: tracked.kind(name) for name in names} == names
    assert set(names.values()) == set(TRACK_KINDS)
    assert tracked.kind("quantum_metrics") is None and tracked.kind("manifest") is None


class _RecordingClient:
    def __init__(self):
        self.texts: dict[str, str] = {}
        self.metric_keys: set[str] = set()

    def log_text(self, run_id, text, path):
        self.texts[path] = text

    def log_batch(self, run_id, metrics):
        self.metric_keys.update(m.key for m in metrics)

    def log_figure(self, run_id, figure, path):
        self.texts[path] = "figure"


def test_a_renamed_output_stays_tracked_and_an_unmarked_one_is_not(tmp_path, summary, monkeypatch):
    pytest.importorskip("mlflow")
    catalog = project_catalog(rename={"training_summary": "final_summary"})
    catalog["plain_summary"] = MemoryDataset()  # same content, no `qsight.track` metadata
    catalog["marked_summary"] = MemoryDataset(metadata={"qsight": {"track": "model_info"}})
    hook = MlflowTrackingHook()
    client = _RecordingClient()
    monkeypatch.setattr(hook, "_active_run", lambda: (client, "run-id"))
    outputs = [("assemble", {"final_summary": summary, "plain_summary": summary}),
               ("describe", {"marked_summary": {"classes": ["No DR"]}})]
    drive(hook, fake_context(tmp_path, {"mlflow": {"enabled": True}}), summary,
          catalog=catalog, outputs=outputs)
    assert set(client.texts) == {"training_summary.json", "model_info.json"}
    assert client.texts["model_info.json"].startswith('{\n  "classes"')
    assert set(evaluation_metrics(summary)) <= client.metric_keys


def test_a_bad_track_kind_stops_the_run_before_the_first_node(tmp_path):
    catalog = DataCatalog.from_config({"history_typo": {
        "type": "MemoryDataset", "metadata": {"qsight": {"track": "histories"}}}})
    pipeline = Pipeline([Node(lambda: 1, None, "history_typo", name="make")])
    hook = MlflowTrackingHook()
    hook.after_context_created(context=fake_context(tmp_path, {"mlflow": {"enabled": True}}))
    with pytest.raises(ConfigError, match=r"'history_typo'.*track='histories'.*history.*summary"):
        hook.before_pipeline_run(run_params={}, pipeline=pipeline, catalog=catalog)


# --- W&B offline ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def offline_run(tmp_path_factory, summary):
    pytest.importorskip("wandb")
    root = tmp_path_factory.mktemp("wandb_project")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    try:
        tracking = {"wandb": {"enabled": True, "project": "qsight-test", "mode": "offline",
                              "run_name": "tiny", "tags": ["test", "cpu"]}}
        drive(WandbHook(), fake_context(root, tracking), summary)
    finally:
        monkeypatch.undo()
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    return read_offline_run(run_dir)


def test_wandb_run_has_name_tags_and_parameters(offline_run):
    assert offline_run.name == "tiny"
    assert offline_run.tags == ["test", "cpu"]
    assert offline_run.config["run"]["seed"] == 42
    assert offline_run.exit_code == 0


def test_wandb_logs_every_epoch_of_every_stage(offline_run, summary):
    rows = [row for row in offline_run.history if "epoch" in row]
    total_epochs = sum(len(stage["history"]) for stage in summary["stages"])
    assert [row["epoch"] for row in rows] == list(range(1, total_epochs + 1))
    logged = offline_run.history_keys()
    for stage in summary["stages"]:
        name = stage["name"]
        for record in stage["history"]:
            for model in record["val"]:
                if model == "loss":
                    continue
                for metric in ("loss", "accuracy"):
                    assert f"{name}/train/{model}/{metric}" in logged
                    assert f"{name}/val/{model}/{metric}" in logged
        assert f"{name}/ensemble_weight/head_a" in logged
        assert f"{name}/uncertainty/entropy" in logged
        assert f"{name}/uncertainty/disagreement" in logged
        assert f"{name}/latency_ms/encoder/p95" in logged
    first = summary["stages"][0]["history"][0]
    row = rows[0]
    assert row["classical/val/ensemble/accuracy"] == first["val"]["ensemble"]["accuracy"]
    assert row["classical/ensemble_weight/head_b"] == first["ensemble_weights"]["head_b"]


def test_wandb_logs_latency_histograms_and_val_confusion_matrices(offline_run, summary):
    logged = offline_run.history_keys()
    for component in summary["latency_samples_ms"]:
        assert f"latency_ms/{component}/_type" in logged
    final = offline_run.history[-1]
    assert final["latency_ms/encoder/_type"] == "histogram"
    for model in summary["evaluation"]["val"]:
        assert final[f"val_confusion_matrix/{model}_table/_type"] == "table-file"
        assert f"report/confusion_val_{model}/_type" in final


def test_wandb_summary_holds_stage_summaries_and_final_metrics(offline_run, summary):
    run_summary = offline_run.summary
    for stage in summary["stages"]:
        assert run_summary[f"stages/{stage['name']}/best_epoch"] == stage["best_epoch"]
        assert run_summary[f"stages/{stage['name']}/epochs_run"] == stage["epochs_run"]
    assert [s["name"] for s in run_summary["stage_summaries"]] == [s["name"] for s in summary["stages"]]
    test_ensemble = summary["evaluation"]["test"]["ensemble"]
    assert run_summary["eval/test/ensemble/quadratic_weighted_kappa"] == pytest.approx(
        test_ensemble["quadratic_weighted_kappa"])


def test_wandb_artifact_holds_summary_model_info_and_report(offline_run):
    assert sorted(offline_run.artifacts["qsight-training-report"]) == [
        "model_info.json", "report.html", "training_summary.json"]


# --- MLflow ---------------------------------------------------------------------------------

def in_fresh_thread(function):
    """Call ``function`` in a new thread and return its result (or raise its error).

    MLflow keeps the active run per thread, so a run that another test left open in the main
    thread (an in-process ``kedro run``, say) cannot leak into these tests.
    """
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory, summary):
    mlflow = pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow_project")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        # artifacts beside the test's database, not in ./mlruns of the working directory
        mlflow.create_experiment("qsight-test", artifact_location=(root / "artifacts").as_uri())
        experiment = mlflow.set_experiment("qsight-test")

        def tracked_run():
            with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
                drive(MlflowTrackingHook(), fake_context(root, {"mlflow": {"enabled": True}}),
                      summary)
            return run

        run = in_fresh_thread(tracked_run)
        client = mlflow.MlflowClient(uri)
        found = mlflow.search_runs(experiment_ids=[experiment.experiment_id],
                                   output_format="list")
        assert [r.info.run_id for r in found] == [run.info.run_id]
        yield client, found[0]
    finally:
        mlflow.set_tracking_uri(previous)


def test_mlflow_final_metrics_equal_the_summary(mlflow_run, summary):
    _, run = mlflow_run
    expected = evaluation_metrics(summary)
    assert expected
    for key, value in expected.items():
        assert run.data.metrics[key] == pytest.approx(value, abs=1e-12), key
    assert run.data.metrics["stages/classical/best_epoch"] == summary["stages"][0]["best_epoch"]


def test_mlflow_epoch_metrics_have_one_step_per_epoch(mlflow_run, summary):
    client, run = mlflow_run
    for stage in summary["stages"]:
        history = client.get_metric_history(run.info.run_id, f"{stage['name']}/val/ensemble/loss")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
            (r["epoch"], pytest.approx(r["val"]["ensemble"]["loss"])) for r in stage["history"]
        ]
    record = summary["stages"][1]["history"][0]
    assert set(epoch_metrics(record)) <= set(run.data.metrics)


def test_mlflow_artifacts_hold_summary_model_info_report_and_plots(mlflow_run, summary):
    client, run = mlflow_run
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"training_summary.json", "model_info.json", "report"} <= top
    report = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert "report/report.html" in report
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "report/figures")}
    assert "report/figures/confusion_test_ensemble.png" in figures
    assert len(figures) == len(report_figures(summary))


def test_mlflow_hook_opens_and_closes_its_own_run_in_the_project(tmp_path, summary):
    """Without an active run the hook opens one in <project>/mlflow.db with the parameters,
    logs the training into it and ends it FINISHED; switched off, it writes nothing."""
    pytest.importorskip("mlflow")
    import mlflow

    off = tmp_path / "off"
    off.mkdir()
    catalog = project_catalog()
    catalog["parameters"] = MemoryDataset({"run": {"batch_size": 16}, "model": {"encoder_name": "x"}})

    def runs():
        assert mlflow.active_run() is None
        drive(MlflowTrackingHook(), fake_context(off, {"mlflow": {"enabled": False}}), summary,
              catalog=catalog)
        drive(MlflowTrackingHook(), fake_context(tmp_path, {"mlflow": {"enabled": True}}), summary,
              catalog=catalog)
        assert mlflow.active_run() is None

    previous = mlflow.get_tracking_uri()
    try:
        in_fresh_thread(runs)
    finally:
        mlflow.set_tracking_uri(previous)
    assert list(off.iterdir()) == []
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("qsight").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "__default__"
    assert run.data.params["run.batch_size"] == "16"
    assert run.data.params["model.encoder_name"] == "x"
    assert set(evaluation_metrics(summary)) <= set(run.data.metrics)


def test_a_run_the_caller_opened_is_logged_into_and_left_open(tmp_path, summary):
    pytest.importorskip("mlflow")
    import mlflow

    def notebook():
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
        notebook_experiment = mlflow.create_experiment(
            "notebook", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=notebook_experiment) as mine:
            drive(MlflowTrackingHook(), fake_context(tmp_path, {"mlflow": {"enabled": True}}),
                  summary)
            assert mlflow.active_run().info.run_id == mine.info.run_id  # not ended by the hook
        return mine.info.run_id

    previous = mlflow.get_tracking_uri()
    try:
        run_id = in_fresh_thread(notebook)
        run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id)
    finally:
        mlflow.set_tracking_uri(previous)
    assert run.info.status == "FINISHED"  # ended by the caller's `with`
    assert set(evaluation_metrics(summary)) <= set(run.data.metrics)


class _BrokenClient:
    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise ConnectionError("tracking server went away")
        return fail


def test_mlflow_failure_mid_run_is_a_warning_not_a_lost_run(tmp_path, summary, monkeypatch, caplog):
    hook = MlflowTrackingHook()
    monkeypatch.setattr(hook, "_active_run", lambda: (_BrokenClient(), "run-id"))
    with caplog.at_level(logging.WARNING, logger="qsight_pipeline.kedro_app.hooks"):
        drive(hook, fake_context(tmp_path, {"mlflow": {"enabled": True}}), summary)
    warnings = _hook_warnings(caplog)
    assert warnings and all("MLflow" in w for w in warnings)
    assert any("train_classical" in w for w in warnings)  # the node whose logging failed


def test_wandb_that_cannot_start_stops_before_any_work(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    fake_wandb = SimpleNamespace(init=lambda **kwargs: (_ for _ in ()).throw(
        RuntimeError("api_key not configured (no-tty)")))
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    import mlflow

    hook = WandbHook()
    hook.after_context_created(context=fake_context(tmp_path, {"wandb": {"enabled": True}}))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.create_experiment("refused", artifact_location=(tmp_path / "artifacts").as_uri())

    def refused_run():
        # opened just before by the MLflow hook, which runs before the W&B hook
        from qsight_pipeline.kedro_app.mlflow_runs import MlflowConfig, start_run

        run_id = start_run(MlflowConfig(tracking_uri=mlflow.get_tracking_uri(), experiment="refused"),
                           tmp_path, "__default__", {})
        with pytest.raises(RuntimeError, match=r"login.*tracking\.wandb\.mode=offline"):
            hook.before_pipeline_run(run_params={}, pipeline=None, catalog=project_catalog())
        assert mlflow.active_run() is None
        return run_id

    try:
        run_id = in_fresh_thread(refused_run)
        assert mlflow.MlflowClient().get_run(run_id).info.status == "FAILED"
    finally:
        mlflow.set_tracking_uri(previous)


def test_mlflow_config_uses_sqlite_inside_the_project_and_names_bad_keys(tmp_path):
    from qsight_pipeline.errors import ConfigError
    from qsight_pipeline.kedro_app.mlflow_runs import load_mlflow_config, resolve_tracking_uri

    config = load_mlflow_config(yaml.safe_load((PROJECT_ROOT / "conf/base/mlflow.yml").read_text()))
    assert config == load_mlflow_config(None)  # the file holds the defaults
    assert config.tracking_uri == "sqlite:///mlflow.db" and config.experiment == "qsight"
    # Relative to the project root, wherever kedro was started from.
    assert resolve_tracking_uri(config.tracking_uri, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"
    with pytest.raises(ConfigError) as error:
        load_mlflow_config({"tracking_url": "sqlite:///x.db", "experiment": ""})
    assert "conf/base/mlflow.yml" in str(error.value)
    assert "tracking_url:" in str(error.value)
    assert "experiment:" in str(error.value)


def test_parameters_are_flattened_for_mlflow_and_long_values_become_tags():
    from qsight_pipeline.kedro_app.mlflow_runs import PARAM_VALUE_LIMIT, flatten_params

    flat = flatten_params({"model": {"encoder_name": "test_resnet", "quantum": {"n_qubits": 4}},
                           "batch_size": 16, "tags": [], "empty": {}})
    assert flat == {"model.encoder_name": "test_resnet", "model.quantum.n_qubits": "4",
                    "batch_size": "16", "tags": "[]", "empty": "{}"}
    # What Kedro's catalog holds for a block a node takes typed: flattened all the same.
    from qsight_pipeline.config import RunSettings

    typed = flatten_params({"run": RunSettings(seed=3)})
    assert typed["run.seed"] == "3" and typed["run.output_dir"] == "data/06_models/trained_model"
    assert PARAM_VALUE_LIMIT == 6000
