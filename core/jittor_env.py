"""Configure Jittor for this machine; every Jittor entry point imports ``jt`` from here.

- No CUDA driver (or ``OVERLOCK_DEVICE=cpu``): Jittor is told there is no ``nvcc`` before it
  is imported, otherwise a CUDA compiler without a runtime makes its import fail.
- A CUDA driver and ``nvcc`` (or ``OVERLOCK_DEVICE=cuda``): ``jt.flags.use_cuda = 1``.
- On CPU, oneDNN must be active: without it Jittor silently uses naive convolution kernels
  that are 3-45x slower. ``make setup`` lays Debian's oneDNN out where Jittor looks
  (tools/install_onednn.sh); if it is missing we fail loudly instead of running slowly.
"""

from __future__ import annotations

import ctypes
import faulthandler
import functools
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable

from core.errors import SetupError

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

# Jittor's info and warning lines ("[i 1201 ...] Found mpicc ...") are off unless asked for with
# OVERLOCK_JITTOR_LOG=1 or Jittor's own log_silent / log_v: the first line a user reads is ours.
if os.environ.get("OVERLOCK_JITTOR_LOG") != "1" and not {"log_silent", "log_v"} & set(os.environ):
    os.environ["log_silent"] = "1"
# Silence also hides Jittor's compile progress: say why a first import takes minutes.
_slow_import_note = threading.Timer(
    15.0,
    lambda: print(
        "Jittor is compiling its kernels for this machine (first use: a few minutes) ...",
        file=sys.stderr,
        flush=True,
    ),
)
_slow_import_note.daemon = True
_slow_import_note.start()
_handlers = _saved_signal_handlers()
import jittor as jt  # noqa: E402  (must follow the environment set-up above)
import jittor_utils  # noqa: E402
from jittor import compile_extern  # noqa: E402

_restore_signal_handlers(_handlers)
_slow_import_note.cancel()


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


def _isolate_compile_workers() -> None:
    """Jittor's import starts a pool of compiler processes in the caller's process group; end it
    now (it is idle) and have every later one start its workers in their own group."""
    original = jittor_utils.pool_initializer
    if getattr(original, "func", None) is _isolated_pool_initializer:
        return
    if jittor_utils.pool_size:
        _close_compile_pool()
    jittor_utils.pool_initializer = functools.partial(
        _isolated_pool_initializer, original, os.getpid()
    )
    jittor_utils.pool_cleanup = _close_compile_pool


_isolate_compile_workers()
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


__all__ = ["DEVICE", "JittorSetupError", "cuda_available", "jt", "onednn_active"]
