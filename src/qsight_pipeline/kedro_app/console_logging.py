"""Log records a person can read: one line each in a log file, Kedro's rich output on a terminal.

``conf/logging.yml`` sends every record to stderr through its ``console`` handler, a plain
``logging.StreamHandler`` that writes ``<time> <LEVEL> <logger>: <message>`` on one line. Kedro's
rich handler, its default, lays each record out in columns at the terminal's width, and when
stderr is not a terminal (CI, ``nohup``, a scheduler's log) that width is 80, so every record
wraps over four to six lines.

Kedro 1.7 builds the handlers of a logging configuration only from the modules ``logging`` and
``kedro.logging`` (others need ``KEDRO_LOGGING_MODULE_ALLOWLIST`` in the environment, and naming
one without it stops every ``kedro`` command), so the file cannot name a class of the project's.
:func:`finish_console_handler`, called when Kedro imports ``settings.py`` (before it creates the
session, and before the first record of the project), finishes that handler instead: on a
terminal it becomes Kedro's ``RichHandler``, as without this file; elsewhere it keeps the plain
line, with any line breaks of a message (a warning's text, say) folded into it, and Python's
warnings become log records like any other.
"""

from __future__ import annotations

import logging
from typing import Any

from kedro.logging import RichHandler

__all__ = ["CONSOLE", "OneLineFormatter", "finish_console_handler"]

CONSOLE = "console"  # the handler's name in conf/logging.yml
ONE_LINE = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE = "%Y-%m-%d %H:%M:%S"


class OneLineFormatter(logging.Formatter):
    """``ONE_LINE``, with the line breaks of the message folded into single spaces.

    A traceback attached to the record (``exc_info``) still follows on its own lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        text = super().formatMessage(record)
        return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _on_terminal(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _rich_like(handler: logging.Handler) -> Any:
    rich = RichHandler(rich_tracebacks=True)  # what Kedro's own rich_logging.yml builds
    rich.set_name(handler.get_name())
    rich.setLevel(handler.level)
    for log_filter in handler.filters:
        rich.addFilter(log_filter)
    return rich


def finish_console_handler(logger: logging.Logger | None = None) -> None:
    """Kedro's rich handler for conf/logging.yml's ``console`` handler on a terminal; elsewhere
    the one-line formatter, and warnings logged. No ``console`` handler (another logging
    configuration, through ``KEDRO_LOGGING_CONFIG``): nothing changes."""
    logger = logger or logging.getLogger()
    for handler in list(logger.handlers):
        if handler.get_name() != CONSOLE or type(handler) is not logging.StreamHandler:
            continue
        if _on_terminal(handler):
            logger.removeHandler(handler)
            logger.addHandler(_rich_like(handler))
        else:
            handler.setFormatter(OneLineFormatter(ONE_LINE, DATE))
            logging.captureWarnings(True)
