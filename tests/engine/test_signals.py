"""The training scripts under real signals, sent as a terminal, a closed terminal or a job
scheduler sends them: one line, exit status 128 + signal, and, once training has begun, a saved
checkpoint that --resume continues. (The bit-for-bit resume after a stop is checked in-process
by test_resume.py; the launchers by test_distributed.py.)
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from core.errors import RunStoppedError
from core.serialization import read_checkpoint
from engine.logs import LATEST
from engine.signals import STOP_SIGNALS, StopSignals, stopping_while_starting

if TYPE_CHECKING:
    from tests.conftest import TinyData

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 2
# From a stop signal to the exit: the rest of one tiny step, a save, the loader's shutdown.
STOP_BOUND_S = 60


@pytest.fixture(scope="module")
def tiny_data(make_tiny_data) -> TinyData:
    # 4 classes x 6 images, batch 8: 3 train batches per epoch, the last one full.
    return make_tiny_data(train_per_class=6, val_per_class=2, seed=5)


def _argv(data: TinyData, out: Path, *extra: str) -> list[str]:
    return data.argv(out, "--epochs", str(EPOCHS), *extra)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_each_stop_signal_asks_for_a_stop_with_its_exit_code(signum: int) -> None:
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    with StopSignals() as stop:
        os.kill(os.getpid(), signum)
        time.sleep(0.01)
        assert stop.received == signum and stop.exit_code == 128 + signum
        os.kill(os.getpid(), signal.SIGTERM)  # a launcher passing the stop on: the first counts
        time.sleep(0.01)
        assert stop.received == signum
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


def test_a_stop_signal_while_starting_is_a_run_stopped_error() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunStoppedError) as stopped, stopping_while_starting():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert str(stopped.value).startswith("stopped by SIGTERM while starting")
    assert signal.getsignal(signal.SIGTERM) == before


def _start(script: str, data: TinyData, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / script), *_argv(data, out, *extra)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # even if we ignore it
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("script", "signum", "to_group"),
    [
        ("train_torch.py", signal.SIGINT, True),
        ("train.py", signal.SIGINT, True),
        ("train.py", signal.SIGTERM, False),
    ],
)
def test_script_saves_on_a_signal_then_resumes(
    script: str, signum: int, to_group: bool, tiny_data: TinyData, tmp_path: Path
) -> None:
    """Ctrl-C (to the whole process group, loader workers included) or a scheduler's SIGTERM:
    one line, exit 128+signal, a resumable checkpoint, and --resume finishes the run.
    """
    suffix = ".pth" if script == "train_torch.py" else ".pkl"
    long_run = ("--epochs", "50", "--workers", "2")  # far longer than the wait below
    proc = _start(script, tiny_data, tmp_path, *long_run)
    try:
        _wait_for(tmp_path / f"init{suffix}", proc)  # the handlers are installed by then
        time.sleep(0.5)
        (os.killpg if to_group else os.kill)(proc.pid, signum)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=300)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert took < STOP_BOUND_S, f"{took:.0f} s from the signal to the exit"
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"stopped by {signal.Signals(signum).name}") and "--resume" in last
    with pytest.raises(ProcessLookupError):  # no loader worker outlived the run
        os.killpg(proc.pid, 0)
    saved = read_checkpoint(tmp_path / f"{LATEST}{suffix}")
    finish = str(saved["epoch"] + 1)
    proc = subprocess.run(
        [sys.executable, str(REPO / script), *_argv(tiny_data, tmp_path, "--epochs", finish)]
        + ["--resume"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(tmp_path / "log.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, int(finish) + 1))
    steps = [(int(r["epoch"]), int(r["step"])) for r in _rows(tmp_path / "steps.csv")]
    assert steps == [(e, s) for e in range(1, int(finish) + 1) for s in (1, 2, 3)]


@pytest.mark.parametrize("delay", [0.4, 1.0])
@pytest.mark.parametrize("script", ["train_torch.py", "train.py"])
def test_ctrl_c_while_the_framework_imports_is_one_line(
    script: str, delay: float, tiny_data: TinyData, tmp_path: Path
) -> None:
    """Ctrl-C soon after the start, while torch / Jittor are still importing: exit 130, one line
    (no traceback from the import or its helper processes, no hang), nothing written."""
    proc = _start(script, tiny_data, tmp_path / "out")
    try:
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=STOP_BOUND_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip() == "stopped by SIGINT while starting, before any training: nothing to save"
    assert not (tmp_path / "out").exists()
