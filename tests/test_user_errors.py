"""Bad input ends a run with its message; real bugs keep their traceback."""

from __future__ import annotations

import sys

from qsight_pipeline import user_errors
from qsight_pipeline.data.layouts import DatasetLayoutError


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
