"""Errors that the command-line scripts report as one line (``core.cli.main_guard``)."""

from __future__ import annotations

import signal

# The signals that stop a run with a saved checkpoint: Ctrl-C, kill / a scheduler's SIGTERM, a
# closed terminal, and the user signals schedulers send ahead of a time limit.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


class InputError(ValueError):
    """Bad input from the user or their files: one line on stderr, exit status 2."""


class UsageError(InputError):
    """A bad command-line value or combination of values."""


class CheckpointError(InputError):
    """A checkpoint cannot be read, or does not fit the model; the message says why."""


class SetupError(RuntimeError):
    """This machine cannot run what was asked (a library or a device is missing); the message
    says what to do. Exit status 1."""


class RunStoppedError(BaseException):
    """The run ended early on purpose (a signal, a diverged loss): one line and ``exit_code``.

    A ``BaseException``, as ``KeyboardInterrupt`` is: a signal handler raises it wherever the
    program is, and an ``except Exception`` there (Jittor's import has several) must not swallow it.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
