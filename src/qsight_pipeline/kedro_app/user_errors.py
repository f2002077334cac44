"""Bad input ends a `kedro run` with its message, not with a page of traceback.

Every error a user can fix is a :class:`qsight_pipeline.errors.UserError` (a bad layout, a bad
stage schedule, a missing quantum dependency, a bad ``predict.input_dir`` ...), and its message
already says what is wrong and which setting to change; the frames of Kedro's runner above it only
hide that line. Kedro's own typed-parameter validation error counts too. :func:`install` wraps
``sys.excepthook`` so that these errors print as ``Error: <message>``; every other exception
keeps its full traceback, and ``QSIGHT_TRACEBACK=1`` shows it for these too. A W&B run wraps
``sys.excepthook`` with its own, which prints every traceback first; ``install`` is called again
once the run has started, and then drops that printout (W&B still learns that the run failed).

This module imports only :mod:`qsight_pipeline.errors`, which imports nothing of the project, so
any module (the run checks included) may use it without an import cycle.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

from qsight_pipeline.errors import ParameterError, UserError

__all__ = ["ParameterError", "find_user_error", "install", "user_error_types"]


def user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UserError]
    try:  # Kedro's own typed-parameter validation (kedro.validation), when a node's check fails
        # lazy: a guard, for Kedro releases without kedro.validation
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


def _wandb_exit_hook(
    handler: Any,
) -> tuple[Callable[[type[BaseException], BaseException], None], Any] | None:
    """``(record, wrapped)`` when ``handler`` is wandb's exit hook, else None.

    Starting a W&B run installs ``wandb.sdk.lib.exit_hooks.ExitHooks.exc_handler``, which records
    the exit code for wandb's teardown, prints the plain traceback of every exception (ours
    included) and then calls the hook it wrapped. ``record`` keeps the first part, ``wrapped`` is
    the hook to call instead, so the traceback is printed only where it should be.
    """
    owner = getattr(handler, "__self__", None)
    if getattr(handler, "__name__", None) != "exc_handler" or not all(
        hasattr(owner, name) for name in ("_orig_excepthook", "exit_code", "exception")
    ):
        return None

    def record(kind: type[BaseException], error: BaseException) -> None:
        owner.exit_code = 255 if issubclass(kind, KeyboardInterrupt) else 1
        owner.exception = error

    return record, owner._orig_excepthook or sys.__excepthook__


def install() -> None:
    """Make our hook the outermost ``sys.excepthook``, wrapping the current one (Kedro's rich one).

    Idempotent. Call it again after something else wraps the hook: a W&B run does
    (``hooks.WandbHook`` calls this after ``wandb.init``), and its own traceback is then dropped.
    """
    previous = sys.excepthook
    if getattr(previous, "_qsight_user_errors", False):
        return
    record = None
    wandb_hook = _wandb_exit_hook(previous)
    if wandb_hook is not None:
        record, previous = wandb_hook
    previous = getattr(previous, "_qsight_wrapped", previous)  # never our hook twice

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        if record is not None:
            record(kind, error)
        user_error = find_user_error(error)
        if os.environ.get("QSIGHT_TRACEBACK") or user_error is None:
            previous(kind, error, tb)
            return
        # Our own message, which names the file or setting; not Kedro's "Failed while saving
        # data to dataset ..." wrapper around it.
        sys.stderr.write(
            f"\nError: {user_error}\n(Set QSIGHT_TRACEBACK=1 to see the full traceback.)\n"
        )

    hook._qsight_user_errors = True  # type: ignore[attr-defined]
    hook._qsight_wrapped = previous  # type: ignore[attr-defined]
    sys.excepthook = hook
