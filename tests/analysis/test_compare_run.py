"""A quick alignment study end to end on the generated dataset (compare.py as a user runs it):
2 seeds of 2 epochs on 8 + 4 images per class. Stopped by SIGTERM in its first run, it saves,
writes a partial report and exits 143; run again it resumes that run and trains the rest, draws
seed 0's ERF and Grad-CAM and the report; a third time it trains nothing; without seed 1's
Jittor run and init.pth (as in a new checkout) it draws that init again and retrains the run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _argv(out: Path) -> list[str]:
    return [
        sys.executable, str(REPO / "compare.py"), "--seeds", "2", "--epochs", "2",
        "--train-per-class", "8", "--val-per-class", "4", "--erf-images", "8",
        "--gradcam-images", "1", "--out", str(out), "--", "--workers", "0",
    ]  # fmt: skip


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _stop_in_first_run(argv: list[str]) -> tuple[int, str]:
    """Start the study and send SIGTERM to compare.py once its first run has logged epoch 1."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("epoch 1/2:"):
            proc.send_signal(signal.SIGTERM)
            break
        assert time.monotonic() < deadline, "".join(lines)
    lines += proc.stdout.readlines()
    return proc.wait(timeout=300), "".join(lines)


@pytest.mark.slow
def test_quick_study_stops_resumes_and_skips(tmp_path: Path) -> None:
    out = tmp_path / "study"
    code, text = _stop_in_first_run(_argv(out))
    assert code == 143, text
    assert "stopped by SIGTERM during seed 0 PyTorch" in text
    report = (out / "report.md").read_text()
    assert "Partial study" in report and "`seed1/jittor` (missing)" in report

    second = _run(_argv(out))
    assert second.returncode == 0, second.stdout + second.stderr
    first_run = "resuming after epoch 1" in second.stdout or "PyTorch: complete" in second.stdout
    assert first_run, second.stdout
    assert "wrote " + str(out / "seed0/init_ulp.pth") in second.stdout
    logs = sorted(out.rglob("log.csv"))
    assert len(logs) == 5
    for log in logs:
        assert [line.split(",")[0] for line in log.read_text().split()[1:]] == ["1", "2"], log
    for name in ("report.md", "report.png", "per_epoch.csv", "seed0_erf.png", "seed0_gradcam.png"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "Partial study" not in report and "**Conclusion.**" in report
    config = (out / "seed0/torch_ulp/config.json").read_text()
    assert "init_ulp.pth" in config

    written = {log: log.stat().st_mtime_ns for log in logs}
    third = _run(_argv(out))
    assert third.returncode == 0, third.stdout + third.stderr
    assert third.stdout.count("skipped") == 5 and "figures are up to date" in third.stdout
    assert {log: log.stat().st_mtime_ns for log in logs} == written

    # A new checkout: the logs without the weights. Seed 1's Jittor run must start again, and
    # its init.pth is drawn again from --seed 1 (checked against the logged first step).
    shutil.rmtree(out / "seed1/jittor")
    (out / "seed1/torch/init.pth").unlink()
    fourth = _run(_argv(out))
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert "seed 1's init.pth is not here: drawing it again" in fourth.stdout
    assert (out / "seed1/torch/init.pth").is_file() and not (out / "seed1/init_restore").exists()
    steps = [(out / f"seed1/{f}/steps.csv").read_text().split()[1] for f in ("torch", "jittor")]
    assert steps[0] == steps[1]  # the same first step: the same initial weights
