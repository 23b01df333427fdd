"""The signals that stop a training run, and what each phase of the run does with them.

Stop signals (``STOP_SIGNALS``): SIGINT (Ctrl-C), SIGTERM (``kill``, job schedulers at the time
limit or on pre-emption, torchrun and mpirun passing a stop on), SIGHUP (the terminal closed),
SIGUSR1 and SIGUSR2 (the early warning some schedulers send before they pre-empt a job:
Slurm's ``--signal``, Grid Engine's ``-notify``). Their default action ends the process with
nothing saved, so catching them only adds the save. SIGQUIT (Ctrl-\\) keeps its default.

- While a run starts (``stopping_while_starting``: the framework's import, parsing, the launcher's
  set-up), a stop signal ends the process at once with one line and exit status 128 + signal;
  nothing has been trained, so there is nothing to save.
- While it trains (``StopSignals``), a stop signal asks the loop to stop after the current step,
  save a resumable checkpoint and exit with 128 + signal; a second Ctrl-C aborts without saving.
- A process forked meanwhile (compile pools, loader workers) does not inherit these handlers.

Standard library only: the entry scripts install it before they import a framework.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from core.errors import STOP_SIGNALS, RunStoppedError


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _detach_from_closed_terminal(signum: int) -> None:
    """After SIGHUP the terminal is gone and writing to it fails (EIO), which would end the run
    before its save: what went to the terminal goes to /dev/null from now on."""
    if signum != signal.SIGHUP:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            if os.isatty(fd):
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _say(text: str) -> None:
    # stderr may be gone (a closed pipe): stopping matters more than saying so.
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)


def _stop_at_once(signum: int, frame: object) -> None:
    _detach_from_closed_terminal(signum)
    raise RunStoppedError(
        f"stopped by {signal.Signals(signum).name} while starting, before any training: "
        "nothing to save",
        128 + signum,
    )


def _own_handlers_in_a_child() -> None:
    # A process forked from a run (Jittor's compile pools, the loader's workers) does not stop
    # the run: SIGINT and SIGTERM end it as by default, as a pool's terminate() expects (Python
    # code on its way out could block on the pool's queue lock, which the parent holds while it
    # terminates the pool); the other stop signals it ignores. The run's process stops the run
    # and ends its workers; a worker may set its own handlers (the loader ignores SIGINT too).
    for signum in STOP_SIGNALS:
        if getattr(signal.getsignal(signum), "__module__", None) == __name__:  # one of ours
            ending = signum in (signal.SIGINT, signal.SIGTERM)
            signal.signal(signum, signal.SIG_DFL if ending else signal.SIG_IGN)


os.register_at_fork(after_in_child=_own_handlers_in_a_child)


@contextlib.contextmanager
def stopping_while_starting() -> Iterator[None]:
    """While active, a stop signal raises ``RunStoppedError`` (one line, 128 + signal) instead
    of a KeyboardInterrupt traceback from inside the framework's import, or a silent death."""
    if not _in_main_thread():
        yield
        return
    previous = {s: signal.signal(s, _stop_at_once) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class StopSignals:
    """While active, each stop signal asks the training loop to stop after the current step, so
    it can save a resumable state (``exit_code`` = 128 + the first signal); a second Ctrl-C
    aborts at once.
    """

    SIGNALS = STOP_SIGNALS

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if _in_main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        _detach_from_closed_terminal(signum)
        if self.received is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return  # a launcher passing the same stop on: already stopping
        self.received = signum
        _say(
            f"\n{signal.Signals(signum).name}: stopping after this step to save a resumable "
            "state (Ctrl-C again aborts without saving)"
        )

    @property
    def name(self) -> str:
        return signal.Signals(self.received or signal.SIGINT).name

    @property
    def exit_code(self) -> int:
        return 128 + int(self.received or signal.SIGINT)

    def join(self, told: float) -> bool:
        """Whether to stop, given ``told`` = the sum over processes of ``received or 0``: all
        must stop after the same step, or the others would wait forever in the next collective.
        A process that got no signal itself stops as if sent SIGTERM.
        """
        if told > 0 and self.received is None:
            self.received = signal.SIGTERM
        return told > 0
