"""Kedro hooks. The W&B hook is filled in by the tracking work (issue 7)."""

from __future__ import annotations


class WandbHook:
    """Placeholder until experiment tracking lands; does nothing."""
