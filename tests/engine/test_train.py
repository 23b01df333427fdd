"""The twin training scripts: smoke runs, outputs, and aligned losses across frameworks."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from core.serialization import read_checkpoint
from engine.logs import LOG_COLUMNS
from models.weights import load_state_dict

if TYPE_CHECKING:
    from tests.conftest import TinyData

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_data(make_tiny_data) -> TinyData:
    return make_tiny_data(train_per_class=8, val_per_class=4, seed=3)


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _read_log(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(("script", "suffix"), [("train_torch.py", ".pth"), ("train.py", ".pkl")])
def test_two_step_run_writes_log_and_checkpoints(
    tiny_data: TinyData, tmp_path: Path, script, suffix
):
    out = tmp_path / "run"
    proc = _run(script, *tiny_data.argv(out), "--epochs", "2", "--max-batches", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _read_log(out / "log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert set(LOG_COLUMNS) <= set(rows[0])
    for row in rows:
        assert np.isfinite(float(row["train_loss"])) and float(row["train_loss"]) > 0
        assert 0.0 <= float(row["acc_top1"]) <= float(row["acc_top5"]) <= 100.0
        total = float(row["train_loss_main"]) + 0.4 * float(row["train_loss_aux"])
        assert float(row["train_loss"]) == pytest.approx(total, rel=1e-4)
    latest = read_checkpoint(out / f"checkpoint_latest{suffix}")
    assert latest["epoch"] == 2 and latest["optimizer"]["step"] == 2
    assert (out / f"checkpoint_best{suffix}").is_file()
    state = load_state_dict(out / f"checkpoint_latest{suffix}")
    init = load_state_dict(out / f"init{suffix}")
    assert state.keys() == init.keys()
    assert any(not np.array_equal(state[k], init[k]) for k in state), "weights never changed"


def test_aligned_runs_give_the_same_losses(tiny_data: TinyData, tmp_path: Path) -> None:
    """From one --init and seed, Jittor and PyTorch follow the same loss curve."""
    steps = 20
    args = ["--epochs", "5", "--max-batches", "4", "--lr", "1e-3"]  # 5 epochs x 4 batches = 20
    torch_out, jittor_out = tmp_path / "torch", tmp_path / "jittor"
    proc = _run("train_torch.py", *tiny_data.argv(torch_out), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _run(
        "train.py", *tiny_data.argv(jittor_out), *args, "--init", str(torch_out / "init.pth")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch_steps = _read_log(torch_out / "steps.csv")
    jittor_steps = _read_log(jittor_out / "steps.csv")
    assert len(torch_steps) == len(jittor_steps) == steps
    drift = []
    for t_row, j_row in zip(torch_steps, jittor_steps, strict=True):
        t, j = float(t_row["loss"]), float(j_row["loss"])
        drift.append(abs(j - t) / abs(t))
    print("relative loss drift per step:", " ".join(f"{d:.1e}" for d in drift))
    first = [
        (float(torch_steps[0][c]), float(jittor_steps[0][c])) for c in ("loss_main", "loss_aux")
    ]
    for t, j in first:
        assert abs(j - t) <= 1e-4, f"first-step loss differs: torch {t} vs jittor {j}"
    assert drift[-1] <= 1e-2, f"loss after {steps} steps differs by {drift[-1]:.2e} relative"
    torch_rows, jittor_rows = _read_log(torch_out / "log.csv"), _read_log(jittor_out / "log.csv")
    for t_row, j_row in zip(torch_rows, jittor_rows, strict=True):
        t, j = float(t_row["val_loss"]), float(j_row["val_loss"])
        assert j == pytest.approx(t, rel=1e-2), (t_row["epoch"], t, j)
