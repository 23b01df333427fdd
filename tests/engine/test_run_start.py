"""How a training run starts: --resume refuses settings that differ from the saved run's unless
--allow-changes (then records them), the data warnings of a multi-process run come from rank 0
only, and the command line answers a bad flag in one line before any framework is imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import train_torch
from backends.base import Backend
from core.serialization import read_checkpoint
from data import DataWarning
from engine.cli import build_parser
from engine.loop import open_datasets
from engine.settings import RUN_SETTINGS, describe, differences, run_settings

if TYPE_CHECKING:
    from tests.conftest import TinyData

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_data(make_tiny_data) -> TinyData:
    return make_tiny_data(train_per_class=6, val_per_class=2, seed=5)


def test_differences_name_each_changed_setting_as_its_flag() -> None:
    args = build_parser("torch", "").parse_args(["--batch-size", "8"])
    args.dataset = "/data/a"
    saved = run_settings(args)
    assert set(saved) == set(RUN_SETTINGS)
    json.dumps(saved)  # plain values: every checkpoint format keeps them as they are
    args = build_parser("torch", "").parse_args(["--batch-size", "4", "--seed", "1", "--sync-bn"])
    args.dataset = "/data/b"
    changes = differences(saved, run_settings(args))
    assert changes == {
        "dataset": ["/data/a", "/data/b"],
        "batch_size": [8, 4],
        "seed": [0, 1],
        "sync_bn": [False, True],
    }
    assert describe(changes) == (
        "--data /data/b (saved /data/a), --batch-size 4 (saved 8), --seed 1 (saved 0), "
        "--sync-bn on (saved off)"
    )
    assert differences({"seed": 0}, run_settings(args)) == {"seed": [0, 1]}  # older checkpoint
    longer = build_parser("torch", "").parse_args(["--batch-size", "8", "--epochs", "99"])
    longer.dataset = "/data/a"
    assert differences(saved, run_settings(longer)) == {}, "--epochs extends a run"


def test_resume_refuses_changed_settings_unless_allowed_then_records_them(
    tiny_data: TinyData, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert train_torch.main(tiny_data.argv(out, "--epochs", "1", "--max-batches", "1")) == 0
    latest = out / "checkpoint_latest.pth"
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def changed(epochs: int, *extra: str) -> list[str]:
        argv = tiny_data.argv(out, "--epochs", str(epochs), "--max-batches", "1", "--resume")
        return [*argv, "--batch-size", "4", "--seed", "1", *extra]

    capsys.readouterr()

    assert train_torch.main(changed(2)) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: --resume: {latest} was trained with other settings: --batch-size 4 (saved 8), "
        "--seed 1 (saved 0); give the saved values, or add --allow-changes to continue with "
        "these (recorded in config.json)"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "a refused start wrote"

    assert train_torch.main(changed(2, "--allow-changes")) == 0
    assert "note: resuming with other settings (--allow-changes): --batch-size 4 (saved 8)" in (
        capsys.readouterr().out
    )
    record = [{"epoch": 2, "batch": 1, "changes": {"batch_size": [8, 4], "seed": [0, 1]}}]
    config = json.loads((out / "config.json").read_text())
    assert config["resumed_with_changes"] == record
    assert config["machine"]["cpu"] and config["machine"]["cpu_count"] >= 1  # where it ran
    saved = read_checkpoint(latest)
    assert saved["epoch"] == 2 and saved["resumed_with_changes"] == record
    assert saved["settings"]["batch_size"] == 4 and saved["settings"]["seed"] == 1

    # The new settings are now the run's: going on with them needs no flag; the record stays.
    assert train_torch.main(changed(3)) == 0
    assert json.loads((out / "config.json").read_text())["resumed_with_changes"] == record


class _Rank:
    """Just what ``open_datasets`` asks of a backend: its place among the processes."""

    def __init__(self, rank: int) -> None:
        self.rank, self.world_size = rank, 2


@pytest.mark.parametrize("rank", [0, 1])
def test_a_text_file_warning_comes_from_rank_0_only(
    rank: int, tiny_data: TinyData, tmp_path: Path
) -> None:
    root = Path(shutil.copytree(tiny_data.root, tmp_path / "data"))
    annotations = root / "val" / "val_annotations.txt"
    with annotations.open("a") as handle:
        handle.write("val_0.JPEG\tn09999999\t0\t0\t1\t1\n")  # a wnid wnids.txt does not list
    args = build_parser("torch", "").parse_args(tiny_data.argv(tmp_path / "out"))
    args.data = root
    backend: Backend = _Rank(rank)  # type: ignore[assignment]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        open_datasets(args, backend)
    unlisted = [w for w in caught if issubclass(w.category, DataWarning)]
    assert len(unlisted) == (1 if rank == 0 else 0)
    if unlisted:
        assert "does not list (n09999999)" in str(unlisted[0].message)


@pytest.mark.parametrize("script", ["train.py", "train_torch.py"])
def test_a_bad_flag_is_one_line_at_once(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / script), "--batch-size", "x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        f"{script}: error: argument --batch-size: invalid int value: 'x' (see {script} --help)\n"
    )
