"""A training run whose disk fills up, as a user meets it: a real 8 MiB tmpfs as OUT holds the
initial weights (5 MB) but not the first checkpoint (15 MB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.serialization import read_checkpoint
from engine.logs import LATEST

REPO = Path(__file__).resolve().parents[2]
SUFFIX = {"train_torch.py": ".pth", "train.py": ".pkl"}


@pytest.fixture(scope="module")
def tiny_data(make_tiny_data):
    return make_tiny_data(train_per_class=4, val_per_class=2, seed=11)


@pytest.mark.parametrize("script", sorted(SUFFIX))
def test_a_full_disk_ends_a_run_in_one_line_and_keeps_what_was_saved(
    script: str, tiny_data, mounted
) -> None:
    out = mounted("out", "size=8m")
    done = subprocess.run(
        [sys.executable, str(REPO / script), *tiny_data.argv(out, "--epochs", "1")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    checkpoint = out / f"{LATEST}{SUFFIX[script]}"
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: No space left on device ({checkpoint}); free some space and run again"
    )
    assert not checkpoint.exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary left
    assert read_checkpoint(out / f"init{SUFFIX[script]}")  # what was saved before still loads
