"""Errors that the command-line scripts report as one line (``utils.training.main_guard``)."""

from __future__ import annotations


class SetupError(RuntimeError):
    """This machine cannot run what was asked (a library or a device is missing); the message
    says what to do."""
