"""The order of the project's hooks is part of its contract (settings.RUN_ORDER): check that Kedro's
plugin manager calls them in that order at every hook point, and that each hook has one job."""

from __future__ import annotations

import pytest
from kedro.framework.hooks.manager import _create_hook_manager, _register_hooks

from qsight_pipeline import settings
from qsight_pipeline.kedro_app import run_checks

RUN_START = [
    "RunLockHook", "RunChecksHook", "LeftoverCleanupHook", "LineageCheckHook",
    "OutputTransactionHook", "StopSignalsHook", "MlflowTrackingHook", "WandbHook",
]
# Commit (or roll back) first, then the trackers close their runs, and the locks go last.
RUN_END = ["OutputTransactionHook", "StopSignalsHook", "MlflowTrackingHook", "WandbHook", "RunLockHook"]


def _call_order(spec: str) -> list[str]:
    """The classes of the hooks Kedro calls at ``spec``, in the order it calls them."""
    manager = _create_hook_manager()
    _register_hooks(manager, settings.HOOKS)
    # pluggy runs a hook's implementations from the end of this list to its start.
    return [type(impl.plugin).__name__ for impl in reversed(getattr(manager.hook, spec).get_hookimpls())]


def test_the_run_order_in_settings_is_the_order_kedro_calls():
    assert [type(hook).__name__ for hook in settings.RUN_ORDER][1:] == RUN_START
    assert _call_order("before_pipeline_run") == RUN_START


@pytest.mark.parametrize("spec", ["after_pipeline_run", "on_pipeline_error"])
def test_outputs_are_committed_or_rolled_back_before_the_locks_are_released(spec):
    assert _call_order(spec) == RUN_END


def test_the_thread_policy_is_chosen_before_the_parameters_are_read():
    order = _call_order("after_context_created")
    assert order[0] == "ThreadPolicyHook"
    assert order.index("RunChecksHook") < order.index("MlflowTrackingHook")


def test_each_guard_hook_has_one_job():
    """A guard hook acts at the start of a run and, at most, undoes that at its end."""
    from qsight_pipeline.kedro_app import run_hooks

    guards = [run_hooks.RunLockHook, run_hooks.LeftoverCleanupHook, run_hooks.LineageCheckHook,
              run_hooks.OutputTransactionHook, run_hooks.StopSignalsHook]
    for guard in guards:
        starts = {"before_pipeline_run"} & set(vars(guard))
        assert starts == {"before_pipeline_run"}, guard.__name__
        methods = {name for name in vars(guard) if not name.startswith("__")}
        assert methods <= {"_release", "before_pipeline_run", "after_pipeline_run",
                           "on_pipeline_error", "before_node_run"}, guard.__name__


def test_parameters_are_validated_once_per_run(monkeypatch):
    calls = []
    real = run_checks.validate_parameters
    monkeypatch.setattr(run_checks, "validate_parameters", lambda p: calls.append(1) or real(p))
    monkeypatch.setattr(run_checks, "check_pipelines", lambda *args, **kwargs: None)
    monkeypatch.setattr(run_checks.preflight, "check_run_environment", lambda *args: None)
    raw = {"run": {"seed": 7}}

    class Context:
        config_loader = {"parameters": raw}

    class Catalog:
        def load(self, name):
            assert name == "parameters"
            return dict(raw)  # what Kedro's catalog hands over: an equal copy

    hook = run_checks.RunChecksHook()
    hook.after_context_created(Context())
    hook.before_pipeline_run({"pipeline_names": ["classical"]}, None, Catalog())
    assert len(calls) == 1
    # A hook used without a context of its own (a bare runner) validates what it is given.
    bare = run_checks.RunChecksHook()
    bare.before_pipeline_run({}, None, Catalog())
    assert len(calls) == 2


def test_the_trackers_read_the_parameters_the_run_checks_validated(monkeypatch, tmp_path):
    from qsight_pipeline.kedro_app.hooks import MlflowTrackingHook, WandbHook

    calls = []
    real = run_checks.validate_parameters
    monkeypatch.setattr(run_checks, "validate_parameters", lambda p: calls.append(1) or real(p))
    raw = {"run": {"seed": 7}, "tracking": {"mlflow": {"enabled": False},
                                           "wandb": {"tags": "smoke, cpu"}}}

    class Context:
        config_loader = {"parameters": raw}
        params = raw
        project_path = tmp_path

    context = Context()
    run_checks.RunChecksHook().after_context_created(context)
    wandb = WandbHook()
    wandb.after_context_created(context)
    mlflow = MlflowTrackingHook()
    mlflow.after_context_created(context)
    assert len(calls) == 1  # one validation for the three hooks
    assert wandb._settings["tags"] == ["smoke", "cpu"] and wandb._settings["enabled"] is False
    assert mlflow._enabled is False
    run_checks.RunChecksHook().after_context_created(Context())  # a new context: checked anew
    assert len(calls) == 2
