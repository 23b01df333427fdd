"""Configure Jittor for this machine; every Jittor entry point imports ``jt`` from here.

- No CUDA driver (or ``OVERLOCK_DEVICE=cpu``): Jittor is told there is no ``nvcc`` before it
  is imported, otherwise a CUDA compiler without a runtime makes its import fail.
- A CUDA driver and ``nvcc`` (or ``OVERLOCK_DEVICE=cuda``): ``jt.flags.use_cuda = 1``.
- On CPU, oneDNN must be active: without it Jittor silently uses naive convolution kernels
  that are 3-45x slower. ``make setup`` lays Debian's oneDNN out where Jittor looks
  (tools/install_onednn.sh); if it is missing we fail loudly instead of running slowly.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import functools
import importlib.abc
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from core.errors import STOP_SIGNALS, SetupError

ONEDNN_DIR = os.path.join(
    os.environ.get("JITTOR_HOME", os.path.expanduser("~")),
    ".cache",
    "jittor",
    "mkl",
    "dnnl_lnx_2.2.0_cpu_gomp",
)


class JittorSetupError(SetupError):
    """Jittor cannot run as this project requires (e.g. oneDNN missing on CPU)."""


def cuda_available() -> bool:
    """True when a CUDA driver library loads and a CUDA compiler is on PATH."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return bool(os.environ.get("nvcc_path") or shutil.which("nvcc"))


def _wanted_device() -> str:
    wanted = os.environ.get("OVERLOCK_DEVICE", "auto").lower()
    if wanted not in ("auto", "cpu", "cuda"):
        raise JittorSetupError(f"OVERLOCK_DEVICE={wanted!r}: use auto, cpu or cuda")
    if wanted == "auto":
        return "cuda" if cuda_available() else "cpu"
    if wanted == "cuda" and not cuda_available():
        raise JittorSetupError(
            "CUDA was asked for (--device cuda or OVERLOCK_DEVICE=cuda), but this machine has no "
            "CUDA driver (libcuda.so.1) or no nvcc; use --device cpu"
        )
    return wanted


# Jittor's C++ log module installs handlers that end the process at once (exit status 1) on
# SIGINT, on a crash signal, and whenever any child process dies from a signal. That skips
# Python's KeyboardInterrupt (no clean shutdown, no saved state), kills a run when an unrelated
# subprocess is interrupted, and hides crashes: under pytest its report goes to captured output
# and is lost. The process keeps the handlers it had before the import, as a PyTorch one would.
_KEPT_SIGNALS = ("SIGINT", "SIGTERM", "SIGCHLD", "SIGSEGV", "SIGFPE", "SIGBUS", "SIGILL", "SIGQUIT")


def _saved_signal_handlers() -> dict[int, ctypes.Array]:
    """The C-level sigaction of each kept signal, as opaque buffers (POSIX only)."""
    if os.name != "posix":
        return {}
    libc = ctypes.CDLL(None)
    saved = {}
    for name in _KEPT_SIGNALS:
        action = ctypes.create_string_buffer(512)  # >= sizeof(struct sigaction) everywhere
        if libc.sigaction(int(getattr(signal, name)), None, action) == 0:
            saved[int(getattr(signal, name))] = action
    return saved


def _restore_signal_handlers(saved: dict[int, ctypes.Array]) -> None:
    libc = ctypes.CDLL(None)
    for signum, action in saved.items():
        libc.sigaction(signum, action, None)


DEVICE = _wanted_device()
if DEVICE == "cpu":
    os.environ["nvcc_path"] = ""
    if not os.path.isfile(os.path.join(ONEDNN_DIR, "lib", "libmkldnn.so")):
        raise JittorSetupError(
            f"oneDNN for Jittor not found in {ONEDNN_DIR}; run 'make setup' "
            "(it installs Debian's libdnnl-dev and lays it out there)"
        )

# Jittor runs `gdb --version` at each import, to attach gdb to a crashed process: it costs time,
# and a Ctrl-C then prints gdb's own traceback. faulthandler (below) shows a crash's Python stack.
os.environ.setdefault("gdb_path", "")

# Jittor's info and warning lines ("[i 1201 ...] Found mpicc ...") are off unless asked for with
# OVERLOCK_JITTOR_LOG=1 or Jittor's own log_silent / log_v: the first line a user reads is ours.
if os.environ.get("OVERLOCK_JITTOR_LOG") != "1" and not {"log_silent", "log_v"} & set(os.environ):
    os.environ["log_silent"] = "1"


class _ClosedPool:
    """Stands for a shut-down compile pool in ``jittor_utils`` (its cleanup calls ``__exit__``)."""

    def __exit__(self, *exc_info: object) -> None:
        return None


def _isolated_pool_initializer(original: Callable[[], None], parent: int) -> None:
    # In a process group of its own, a compile worker gets no Ctrl-C or group SIGTERM: a worker
    # killed by one dies holding the pool's queue lock, and the parent's exit then blocks for
    # ever in Pool.terminate (jittor_utils.pool_cleanup). It still dies with its parent.
    os.setpgrp()
    if os.name == "posix":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)
    original()


def _close_compile_pool() -> None:
    pool = getattr(jittor_utils, "p", None)
    if pool is not None:
        pool.__exit__(None, None, None)
    jittor_utils.p = _ClosedPool()
    jittor_utils.pool_size = 0  # the next compile job starts a new (isolated) pool


def _quiet_probes_while_importing() -> Callable[[], None]:
    """While Jittor imports it probes tools (``addr2line --version``, ...) with
    ``jittor_utils.run_cmd``, which writes a failed command's output to stderr: after a Ctrl-C
    to the process group, whose shell it reaches too, that is a tool's banner above our one line.
    Until the returned function is called, a failed command's output goes into its exception
    instead (the probes catch it; any other failure still shows it). Modules that import
    ``run_cmd`` by name during the import keep the wrapper, which then behaves as the original."""
    original = jittor_utils.run_cmd
    importing = [True]

    def run_cmd(cmd: str, cwd: Any = None, err_msg: Any = None, print_error: bool = True) -> str:
        return original(cmd, cwd, err_msg, print_error and not importing[0])

    jittor_utils.run_cmd = run_cmd

    def done() -> None:
        importing[0] = False

    return done


def _isolate_compile_workers() -> None:
    """Every compile pool of Jittor's (the first may start during its import) starts its workers
    in a process group of their own."""
    original = jittor_utils.pool_initializer
    if getattr(original, "func", None) is _isolated_pool_initializer:
        return
    jittor_utils.pool_initializer = functools.partial(
        _isolated_pool_initializer, original, os.getpid()
    )
    jittor_utils.pool_cleanup = _close_compile_pool


# Stop signals (Ctrl-C, a scheduler's SIGTERM, ...) that arrive while Jittor imports wait until
# it returns: raised inside the import, the handler's exception can end in one of Jittor's
# `except Exception` blocks or in a C++ callback that drops it, and the run then goes on.
class _HeldStopSignals:
    """While active, a stop signal with a Python handler is held and passed to that handler when
    the block ends; a second one ends the process at once (a cold import compiles for minutes)."""

    def __init__(self, slow_note: threading.Timer) -> None:
        self.slow_note, self.held, self.previous = slow_note, [], {}

    def __enter__(self) -> _HeldStopSignals:
        for signum in STOP_SIGNALS:
            if callable(signal.getsignal(signum)):
                self.previous[signum] = signal.signal(signum, self._hold)
        return self

    def _hold(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.held:
            print(f"stopped by {name} while Jittor was starting", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.held.append(signum)
        if self.slow_note.finished.is_set():  # the user was told it compiles: say it is heard
            print(f"{name}: stopping once Jittor has compiled ({name} again ends at once)",
                  file=sys.stderr, flush=True)  # fmt: skip

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        for signum in self.held:
            signal.raise_signal(signum)  # now the handler's exception reaches the caller

    @staticmethod
    def defaults_in_a_child() -> None:
        # A compile worker forked by the import must die of a pool's SIGTERM even when it is
        # stuck in a lock that the fork copied held (a Python handler would never run there).
        for signum in STOP_SIGNALS:
            if getattr(signal.getsignal(signum), "__func__", None) is _HeldStopSignals._hold:
                signal.signal(signum, signal.SIG_DFL)


os.register_at_fork(after_in_child=_HeldStopSignals.defaults_in_a_child)


class _HandlersBackAfterLoad(importlib.abc.MetaPathFinder):
    """Puts the saved C-level handlers back the moment each of Jittor's C++ libraries has loaded
    (its static initialisers install Jittor's): the rest of the import, which runs compilers in
    subprocesses, runs with the process's own. Threads started before the import (numpy's) may
    take a SIGCHLD that the main thread blocks."""

    LIBRARIES = ("jit_utils_core", "jittor_core")

    def __init__(self, handlers: dict[int, ctypes.Array]) -> None:
        self.handlers = handlers

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.LIBRARIES:
            return None
        for finder in sys.meta_path:
            found = None if finder is self else finder.find_spec(name, path, target)
            if found is not None:
                found.loader.create_module = self._restoring(found.loader.create_module)
                return found
        return None

    def _restoring(self, create: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def create_and_restore(spec: Any) -> Any:
            module = create(spec)
            _restore_signal_handlers(self.handlers)
            return module

        return create_and_restore


@contextlib.contextmanager
def _importing_jittor() -> Iterator[None]:
    """What the process needs around ``import jittor`` (see the notes above): its own signal
    handlers kept, stop signals held, quiet unless the import compiles for long."""
    slow_note = threading.Timer(
        15.0,  # silence also hides Jittor's compile progress: say why a first import is slow
        lambda: print("Jittor is compiling its kernels for this machine (first use: a few "
                      "minutes) ...", file=sys.stderr, flush=True),
    )  # fmt: skip
    slow_note.daemon = True
    handlers = _saved_signal_handlers()
    # Jittor leaves SIGINT to Python under Jupyter (JPY_PARENT_PID set); SIGCHLD waits until
    # the handlers are back, or a helper of the import that dies of a Ctrl-C ends the process.
    jupyter = "JPY_PARENT_PID" in os.environ
    os.environ.setdefault("JPY_PARENT_PID", str(os.getppid()))
    if os.name == "posix":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    slow_note.start()  # after the block: a thread inherits the signal mask
    finder = _HandlersBackAfterLoad(handlers)
    sys.meta_path.insert(0, finder)
    with _HeldStopSignals(slow_note):
        try:
            yield
        finally:
            sys.meta_path.remove(finder)
            slow_note.cancel()
            if not jupyter:
                os.environ.pop("JPY_PARENT_PID", None)
            _restore_signal_handlers(handlers)
            if os.name == "posix":
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


import jittor_utils  # noqa: E402  (before jittor: its compile pool may start during the import)

_isolate_compile_workers()
_imported = _quiet_probes_while_importing()
with _importing_jittor():
    import jittor as jt  # noqa: E402
    from jittor import compile_extern  # noqa: E402
_imported()
if jittor_utils.pool_size:  # the import's pool is idle now: its workers need not wait
    _close_compile_pool()
if not faulthandler.is_enabled():  # a crash in a kernel still shows the Python stack
    faulthandler.enable()

if DEVICE == "cuda":
    if not jt.has_cuda:
        raise JittorSetupError("OVERLOCK_DEVICE=cuda but Jittor found no CUDA; unset it")
    jt.flags.use_cuda = 1
elif compile_extern.mkl_ops is None:
    raise JittorSetupError(
        "Jittor did not load oneDNN and would fall back to naive CPU kernels; "
        f"check {ONEDNN_DIR} (run 'make setup') and that use_mkl is not set to 0"
    )


def onednn_active() -> bool:
    """True when Jittor's oneDNN (mkl) operators are compiled and loaded."""
    return compile_extern.mkl_ops is not None


CUDA_FORMS_VARIABLE = "OVERLOCK_JITTOR_CUDA_FORMS"


def cuda_forms() -> bool:
    """True where the model takes its CUDA forms (Jittor's own ops and plain expressions instead
    of the CPU kernels): on CUDA, and on the CPU with OVERLOCK_JITTOR_CUDA_FORMS=1, which tests
    those lines without a GPU. Read at each call, so a test can switch it."""
    return bool(jt.flags.use_cuda) or os.environ.get(CUDA_FORMS_VARIABLE) == "1"


def code(shape: Any, dtype: Any, inputs: list[jt.Var], **kernel: Any) -> Any:
    """``jt.code`` (a C++ kernel over ``inputs``), with one Jittor 1.3.11 defect avoided: a fresh
    one-element ``jt.array`` is fused into its consumers as a constant, and a kernel that reads
    its memory can then read garbage (seen after a training run in the same process, e.g. a
    one-channel BatchNorm's weight). Such inputs are computed first."""
    scalars = [v for v in inputs if v.numel() == 1]
    if scalars:
        jt.sync(scalars)
    return jt.code(shape, dtype, inputs, **kernel)


__all__ = [
    "CUDA_FORMS_VARIABLE",
    "DEVICE",
    "JittorSetupError",
    "code",
    "cuda_available",
    "cuda_forms",
    "jt",
    "onednn_active",
]
