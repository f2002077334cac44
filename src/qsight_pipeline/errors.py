"""The one base class of every error that a user causes and can fix.

This module imports nothing of the project, so any module may raise these without an import cycle.
A :class:`UserError` ends ``kedro run`` with ``Error: <message>`` and no traceback (see
``user_errors.install``); its message must name the file or the setting to change, and how.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input (a setting, a file, a data layout) that the user can fix; the message says how."""


class ConfigError(UserError, ValueError):
    """A parameter or configuration file is invalid."""


class ArtifactError(UserError):
    """An artifact on disk is missing, unsafe, corrupt or from another run."""


class ParameterError(ConfigError):
    """A parameter failed validation before the run started."""


class TrackingError(UserError, RuntimeError):
    """An experiment tracker that is switched on cannot start (no login, no network, ...)."""
