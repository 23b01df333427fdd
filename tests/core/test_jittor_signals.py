"""Jittor as a user at a terminal meets it: quiet by default, and Ctrl-C to the whole process
group (what a terminal sends) ends the process instead of hanging in Jittor's compile pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO)}
ENV.pop("log_silent", None)
ENV.pop("log_v", None)
ENV.pop("OVERLOCK_JITTOR_LOG", None)

# Start a compile pool exactly as jittor_utils.run_cmds does (its initializer, its cleanup at
# exit), then wait for Ctrl-C like a run at work; exit 130 on KeyboardInterrupt.
POOL_SCRIPT = """
import atexit, os, sys, time
from multiprocessing import Pool
from core.jittor_env import jt
import jittor_utils
jittor_utils.p = Pool(3, initializer=jittor_utils.pool_initializer)
jittor_utils.p.__enter__()
jittor_utils.pool_size = 3
atexit.register(jittor_utils.pool_cleanup)
# A worker leaves the group in its initializer, which runs after Pool() returns: wait for it.
deadline = time.monotonic() + 60
while True:
    groups = {os.getpgid(w.pid) for w in jittor_utils.p._pool}
    if os.getpgid(0) not in groups or time.monotonic() > deadline:
        break
    time.sleep(0.05)
print("workers in own groups:", os.getpgid(0) not in groups, flush=True)
try:
    time.sleep(120)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def test_jittor_says_nothing_of_its_own_by_default() -> None:
    code = "from core.jittor_env import jt; print('ready', jt.array([1.0]).numpy()[0])"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ready 1.0"
    assert "[i " not in done.stderr and "[w " not in done.stderr, done.stderr
    loud = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**ENV, "OVERLOCK_JITTOR_LOG": "1"}, timeout=600)  # fmt: skip
    assert "[i " in loud.stdout + loud.stderr  # the switch turns Jittor's own lines back on


def test_ctrl_c_to_the_process_group_ends_a_process_with_a_compile_pool() -> None:
    proc = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT], cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        first = proc.stdout.readline()
        assert first.strip() == "workers in own groups: True", first + proc.stderr.read()
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("still running 30 s after Ctrl-C (blocked in the compile pool's cleanup)")
    assert proc.returncode == 130, err
    assert out.strip() == "interrupted"
