"""Bad input ends a `kedro run` with its message, not with a page of traceback.

The project's own exceptions for wrong settings or data (a bad layout, a bad stage schedule, a
missing quantum dependency, ...) already say what is wrong and which setting to change; the
frames of Kedro's runner above them only hide that line. :func:`install` wraps
``sys.excepthook`` so that these errors print as ``Error: <message>``; every other exception
keeps its full traceback, and ``QSIGHT_TRACEBACK=1`` shows it for these too.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

from qsight_pipeline.errors import ConfigError


class ParameterError(ConfigError):
    """A parameter failed validation before the run started."""


def user_error_types() -> tuple[type[BaseException], ...]:
    from qsight_pipeline.errors import UserError

    types: list[type[BaseException]] = [UserError, ParameterError]
    try:  # Kedro's own typed-parameter validation (kedro.validation), when a node's check fails
        from kedro.validation.exceptions import ParameterValidationError

        types.append(ParameterValidationError)
    except ImportError:  # an older Kedro without it
        pass
    return tuple(types)


def _is_user_error(error: BaseException) -> bool:
    types = user_error_types()
    seen = set()
    while error is not None and id(error) not in seen:  # Kedro may chain the original error
        if isinstance(error, types):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def install() -> None:
    """Wrap the current ``sys.excepthook`` (Kedro's rich one) once."""
    previous = sys.excepthook
    if getattr(previous, "_qsight_user_errors", False):
        return

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        if os.environ.get("QSIGHT_TRACEBACK") or not _is_user_error(error):
            previous(kind, error, tb)
            return
        sys.stderr.write(
            f"\nError: {error}\n(Set QSIGHT_TRACEBACK=1 to see the full traceback.)\n"
        )

    hook._qsight_user_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook
