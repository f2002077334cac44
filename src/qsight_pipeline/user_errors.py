"""Bad input ends a `kedro run` with its message, not with a page of traceback.

Every error a user can fix is a :class:`qsight_pipeline.errors.UserError` (a bad layout, a bad
stage schedule, a missing quantum dependency, a bad ``predict.input_dir`` ...), and its message
already says what is wrong and which setting to change; the frames of Kedro's runner above it only
hide that line. Kedro's own typed-parameter validation error counts too. :func:`install` wraps
``sys.excepthook`` so that these errors print as ``Error: <message>``; every other exception
keeps its full traceback, and ``QSIGHT_TRACEBACK=1`` shows it for these too.

This module imports only :mod:`qsight_pipeline.errors`, which imports nothing of the project, so
any module (the run checks included) may use it without an import cycle.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

from qsight_pipeline.errors import ParameterError, UserError

__all__ = ["ParameterError", "find_user_error", "install", "user_error_types"]


def user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UserError]
    try:  # Kedro's own typed-parameter validation (kedro.validation), when a node's check fails
        from kedro.validation.exceptions import ParameterValidationError

        types.append(ParameterValidationError)
    except ImportError:  # an older Kedro without it
        pass
    return tuple(types)


def find_user_error(error: BaseException | None) -> BaseException | None:
    """The first user error in ``error``'s cause/context chain (Kedro may wrap it), or None."""
    types = user_error_types()
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, types):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def install() -> None:
    """Wrap the current ``sys.excepthook`` (Kedro's rich one) once."""
    previous = sys.excepthook
    if getattr(previous, "_qsight_user_errors", False):
        return

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        if os.environ.get("QSIGHT_TRACEBACK") or find_user_error(error) is None:
            previous(kind, error, tb)
            return
        sys.stderr.write(
            f"\nError: {error}\n(Set QSIGHT_TRACEBACK=1 to see the full traceback.)\n"
        )

    hook._qsight_user_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook
