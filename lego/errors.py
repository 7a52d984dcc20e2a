"""User errors: mistakes in a config, data, weights or command that one sentence explains.

``python -m lego`` prints such an error as one line and exits with status 2 (the full traceback
with ``--debug`` or ``LEGO_DEBUG=1``); any other exception is a program error and keeps its
traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of the errors caused by what the user gave; the message says what and where."""


class TrainingFreeError(UserError, RuntimeError):
    """A training-free method (SDEdit, ProxEdit, copy input) was asked to ``fit``."""


class ConfigError(UserError, ValueError):
    """An option's value is invalid, or options that must agree do not (e.g. ``vlm_dim``)."""
