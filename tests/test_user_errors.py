"""Bad input ends a run with its message; real bugs keep their traceback."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from kedro.io import DatasetError

from qsight_pipeline import errors, user_errors
from qsight_pipeline.data.layouts import DatasetLayoutError
from qsight_pipeline.errors import ParameterError, UserError


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
    assert "Error: node failed" in err and "QSIGHT_TRACEBACK=1" in err
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
    from qsight_pipeline.datasets import ArtifactDatasetError, MissingArtifactError
    from qsight_pipeline.models.encoders import EncoderError, EncoderWeightsError
    from qsight_pipeline.models.quantum.availability import QuantumDependencyError
    from qsight_pipeline.pipelines.predict.nodes import PredictInputError
    from qsight_pipeline.run_checks import QuantumUnavailableError
    from qsight_pipeline.safe_files import CorruptArtifactError
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


def test_a_user_error_raised_during_the_run_ends_kedro_run_with_its_message(kedro_project):
    # All parameters are valid, so the run starts; the predict node's input has not been written
    # yet. That was a plain DatasetError with a page of traceback.
    result = kedro_project.run("--pipeline", "predict", check=False)
    assert result.returncode != 0
    assert "Error: " in result.stderr and "complete_checkpoint.pth does not exist" in result.stderr
    assert "Run the pipeline that writes it first" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
