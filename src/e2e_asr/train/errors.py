"""The training run's own error type (kept apart so every part of ``train`` can raise it)."""

from __future__ import annotations


class TrainError(RuntimeError):
    """A run that cannot start or continue; the message says why and what to do."""
