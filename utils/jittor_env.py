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
import os
import shutil
import signal

ONEDNN_DIR = os.path.join(
    os.environ.get("JITTOR_HOME", os.path.expanduser("~")),
    ".cache",
    "jittor",
    "mkl",
    "dnnl_lnx_2.2.0_cpu_gomp",
)


class JittorSetupError(RuntimeError):
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
    return wanted


DEVICE = _wanted_device()
if DEVICE == "cpu":
    os.environ["nvcc_path"] = ""
    if not os.path.isfile(os.path.join(ONEDNN_DIR, "lib", "libmkldnn.so")):
        raise JittorSetupError(
            f"oneDNN for Jittor not found in {ONEDNN_DIR}; run 'make setup' "
            "(it installs Debian's libdnnl-dev and lays it out there)"
        )

import jittor as jt  # noqa: E402  (must follow the environment set-up above)
from jittor import compile_extern  # noqa: E402

# Jittor's C++ log module installs handlers that end the process at once ("quick exit") on
# SIGINT and whenever any child process dies from a signal. That skips Python's
# KeyboardInterrupt (no clean shutdown, no saved state) and kills a run when an unrelated
# subprocess is interrupted. Give both back to Python, as in a PyTorch process.
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGCHLD, signal.SIG_DFL)

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
