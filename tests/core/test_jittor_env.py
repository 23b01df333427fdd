"""The Jittor configuration: CPU runs use oneDNN, never the naive fallback."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.jittor_env import DEVICE, cuda_available, jt, onednn_active

REPO = Path(__file__).resolve().parents[2]


def test_device_matches_machine() -> None:
    assert DEVICE in ("cpu", "cuda")
    assert jt.flags.use_cuda == (1 if DEVICE == "cuda" else 0)


def test_onednn_runs_the_convolution() -> None:
    if DEVICE != "cpu":
        return  # on CUDA, cuDNN does the convolutions
    assert onednn_active()
    x = jt.array(np.random.default_rng(0).standard_normal((2, 8, 16, 16)).astype(np.float32))
    w = jt.array(np.random.default_rng(1).standard_normal((8, 8, 3, 3)).astype(np.float32))
    jt.nn.conv2d(x, w, padding=1).sync()  # compile outside the profiled run
    with jt.profile_scope(warmup=0, rerun=0) as report:
        jt.nn.conv2d(x, w, padding=1).sync()
    op_names = [row[0] for row in report[1:]]
    # Jittor's conv tuner swaps the reindex-reduce kernel for mkl_conv only with oneDNN.
    assert any(name.startswith("mkl_conv") for name in op_names), op_names


def test_missing_onednn_is_a_clear_error(tmp_path: Path) -> None:
    env = dict(os.environ, HOME=str(tmp_path), OVERLOCK_DEVICE="cpu", PYTHONPATH=str(REPO))
    env.pop("JITTOR_HOME", None)
    proc = subprocess.run(
        [sys.executable, "-c", "import core.jittor_env"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "oneDNN for Jittor not found" in proc.stderr
    assert "make setup" in proc.stderr


def test_bad_device_request_is_a_clear_error() -> None:
    env = dict(os.environ, OVERLOCK_DEVICE="tpu", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", "import core.jittor_env"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "OVERLOCK_DEVICE='tpu'" in proc.stderr


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA: the request is valid here")
def test_cuda_request_without_cuda_is_one_line(tmp_path: Path) -> None:
    """``--device cuda`` on a machine without CUDA: one line saying what to do, exit 1, no
    traceback, nothing written."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--device", "cuda", "--data", str(tmp_path)]
        + ["--epochs", "1", "--out", str(out)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("error", "Traceback"))]
    assert proc.returncode == 1, proc.stderr
    assert lines == [lines[0]] and "CUDA was asked for" in lines[0] and "--device cpu" in lines[0]
    assert not out.exists()


def test_python_keeps_sigint_and_sigchld() -> None:
    """Jittor's quick-exit handlers do not stay: Ctrl-C raises KeyboardInterrupt, and a child
    process killed by a signal does not end this process."""
    script = (
        "import os, signal, subprocess, sys, time\n"
        "from core.jittor_env import jt\n"
        "assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "child.kill()\n"
        "assert child.wait(timeout=30) == -9  # we are still here to see it\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt raised')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        # A job started in the background by a non-interactive shell inherits an ignored
        # SIGINT; the child gets the default, as from a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "KeyboardInterrupt raised"


def test_a_crash_is_reported_by_python_not_hidden_by_jittor() -> None:
    """Jittor's handler would print to (possibly captured) stderr and exit with status 1, which
    is how a crash looks like a silent failure under pytest; Python's faulthandler must keep it.
    """
    crash = (
        "import ctypes, faulthandler\n"
        "faulthandler.enable()\n"
        "from core.jittor_env import jt\n"
        "ctypes.string_at(0)\n"  # read address 0: SIGSEGV
    )
    proc = subprocess.run(
        [sys.executable, "-c", crash], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -11, (proc.returncode, proc.stderr[-2000:])
    assert "Fatal Python error: Segmentation fault" in proc.stderr
    assert "Caught segfault" not in proc.stderr
