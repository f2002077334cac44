"""Bad input ends a run with its message; real bugs keep their traceback."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from kedro.io import DatasetError

from qsight_pipeline import errors
from qsight_pipeline.data.layouts import DatasetLayoutError
from qsight_pipeline.errors import ParameterError, UserError
from qsight_pipeline.kedro_app import user_errors


def _raise_and_capture(error: BaseException):
    try:
        raise error
    except BaseException as caught:  # noqa: BLE001 - the hook receives whatever was raised
        return type(caught), caught, caught.__traceback__


def test_user_errors_print_only_their_message(monkeypatch, capsys):
    delegated = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: delegated.append(args))
    monkeypatch.delenv("QSIGHT_TRACEBACK", raising=False)
    user_errors.install()
    user_errors.install()  # idempotent: one wrapper, not two

    wrapped = RuntimeError("node failed")
    wrapped.__cause__ = DatasetLayoutError("dataset.root /x is not a folder")
    sys.excepthook(*_raise_and_capture(wrapped))
    err = capsys.readouterr().err
    # The user error's own message, not the wrapper's (Kedro's "Failed while saving ...").
    # Pinned in full: how every user error ends `kedro run`, one line and the way to the traceback.
    assert err == ("\nError: dataset.root /x is not a folder\n"
                   "(Set QSIGHT_TRACEBACK=1 to see the full traceback.)\n")
    assert "node failed" not in err
    assert delegated == []

    sys.excepthook(*_raise_and_capture(KeyError("a bug")))
    assert len(delegated) == 1 and isinstance(delegated[0][1], KeyError)

    monkeypatch.setenv("QSIGHT_TRACEBACK", "1")
    sys.excepthook(*_raise_and_capture(DatasetLayoutError("layout")))
    assert len(delegated) == 2


# --- one base class ---------------------------------------------------------------------------

def _user_error_classes():
    from qsight_pipeline.data.image_cache import ImageArrayError, UnreadableImagesError
    from qsight_pipeline.data.splits import SplitError
    from qsight_pipeline.files.safe_files import CorruptArtifactError
    from qsight_pipeline.kedro_app.datasets import ArtifactDatasetError, MissingArtifactError
    from qsight_pipeline.kedro_app.run_checks import QuantumUnavailableError
    from qsight_pipeline.models.encoders import EncoderError, EncoderWeightsError
    from qsight_pipeline.models.quantum.availability import QuantumDependencyError
    from qsight_pipeline.pipelines.predict.nodes import PredictInputError
    from qsight_pipeline.training.stages import ScheduleError

    # (class, the base that `except` clauses and tests written before UserError still catch)
    return [
        (DatasetLayoutError, ValueError), (UnreadableImagesError, ValueError),
        (SplitError, ValueError), (ScheduleError, ValueError), (EncoderError, ValueError),
        (EncoderWeightsError, RuntimeError), (QuantumDependencyError, ImportError),
        (QuantumUnavailableError, RuntimeError), (ParameterError, ValueError),
        (PredictInputError, FileNotFoundError), (MissingArtifactError, DatasetError),
        (ArtifactDatasetError, DatasetError), (CorruptArtifactError, ValueError),
        (ImageArrayError, ValueError),
    ]


def test_every_user_error_shares_the_base_class_and_keeps_its_old_one():
    assert user_errors.find_user_error(RuntimeError("a bug")) is None
    for cls, old_base in _user_error_classes():
        error = cls("bad input")
        assert isinstance(error, UserError) and isinstance(error, old_base), cls
        wrapper = RuntimeError("node failed")
        wrapper.__context__ = error
        assert user_errors.find_user_error(wrapper) is error


def test_the_error_modules_import_nothing_that_imports_them_back():
    def project_imports(module) -> set[str]:
        tree = ast.parse(Path(module.__file__).read_text())
        return {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qsight")}

    assert project_imports(errors) == set()
    assert project_imports(user_errors) == {"qsight_pipeline.errors"}


@pytest.mark.slow
def test_a_user_error_raised_during_the_run_ends_kedro_run_with_its_message(kedro_project):
    # All parameters are valid, so the run starts; the predict node's input has not been written
    # yet. That was a plain DatasetError with a page of traceback.
    result = kedro_project.run("--pipelines", "predict", check=False)
    assert result.returncode != 0
    assert "Error: " in result.stderr and "complete_checkpoint.pth does not exist" in result.stderr
    assert "Run the pipeline that writes it first" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_wandb_run_does_not_print_its_traceback_in_front_of_ours(monkeypatch, capsys):
    exit_hooks = pytest.importorskip("wandb.sdk.lib.exit_hooks")
    from qsight_pipeline.kedro_app.datasets import MissingArtifactError

    kedro_hook = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: kedro_hook.append(args))
    monkeypatch.setattr(sys, "exit", sys.exit)  # wandb's hook replaces it; put it back after
    monkeypatch.delenv("QSIGHT_TRACEBACK", raising=False)
    user_errors.install()  # the run checks, before any node
    wandb_hooks = exit_hooks.ExitHooks()
    wandb_hooks.hook()  # what wandb.init does when it starts its service
    user_errors.install()  # hooks.WandbHook, once the W&B run has started

    sys.excepthook(*_raise_and_capture(MissingArtifactError("features.pkl does not exist")))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert [line for line in lines if line.startswith("Error:")] == lines[:1]
    assert "features.pkl" in lines[0]
    assert "Traceback" not in err and kedro_hook == []
    assert wandb_hooks.exit_code == 1  # wandb still learns that the process failed

    # A bug keeps one full traceback, Kedro's, without wandb's plain copy in front of it.
    sys.excepthook(*_raise_and_capture(KeyError("a bug")))
    assert "Traceback" not in capsys.readouterr().err
    assert len(kedro_hook) == 1 and isinstance(kedro_hook[0][1], KeyError)
    outermost = sys.excepthook
    user_errors.install()
    assert sys.excepthook is outermost  # still idempotent


# --- `kedro run` ends with one `Error:` line (issue 18, item 9) --------------------------------

def assert_one_error_line(result, *fragments: str) -> str:
    """The run failed and its stderr has exactly one line starting with `Error:`, holding every
    fragment, and no traceback anywhere."""
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr[-4000:]
    message = result.stderr[result.stderr.index("Error:"):]
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-4000:]
    return message


DEVICE_FORMS = "must be auto, cpu, mps, cuda or cuda:<index> (e.g. cuda:1)"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("params", "fragments"),
    [
        ("run.device=cuda:abc", ["  run.device: " + DEVICE_FORMS, "got 'cuda:abc'"]),
        ("predict.device=gpu", ["  predict.device: " + DEVICE_FORMS, "got 'gpu'"]),
        ("run.device_ids=x y", ["  run.device_ids: must be GPU indices", "'0,1' or '0 1'", "got 'x y'"]),
        # Kedro itself refuses this one, with its usage line: `--params` splits on commas.
        ("run.device_ids=x,y", ["Invalid format of `params` option: Item `y`"]),
        ("run.stages.0.learning_rate=-1",
         ["stage 0 ('classical'): field `learning_rate` Input should be greater than 0"]),
        ("run.stages.3.learning_rate=0.001",
         ["--params run.stages.3.learning_rate=0.001: `run.stages` has 3 item(s)",
          "a `run.stages` list in conf/local/parameters.yml"]),
        # The old top-level name is read as run.seed, and its bad value named by the new key.
        ("seed=abc", ["  run.seed: Input should be a valid integer, got 'abc'"]),
    ],
)
def test_bad_params_end_the_run_before_any_node_with_one_error_line(kedro_project, params,
                                                                  fragments):
    result = kedro_project.run("--env", "smoke", "--params", params, check=False, timeout=300)
    assert_one_error_line(result, *fragments)
    written = [p for p in (kedro_project.path / "data").rglob("*") if p.is_file()
               and "01_raw" not in p.parts and p.name != ".gitkeep"]
    assert written == [], "no node may run"


@pytest.mark.slow
def test_a_user_error_after_wandb_started_is_one_error_line_without_wandbs_traceback(
    kedro_project,
):
    # The smoke environment logs to W&B (offline); the feature cache has not been written yet.
    result = kedro_project.run("--env", "smoke", "--pipelines", "quantum", check=False,
                               timeout=300, wandb=True)
    assert "wandb: " in result.stderr and list((kedro_project.path / "wandb").glob("offline-run-*"))
    assert_one_error_line(result, "quantum_training_data.pkl does not exist",
                          "Run the pipeline that writes it first")
