"""bench.py: one real (tiny) run of the eager peers end to end (torch.compile takes minutes: it
runs in make bench), bad arguments and an unwritable output folder."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import bench
from analysis import bench_table


def test_tiny_run_of_the_eager_peers(tmp_path: Path, capsys) -> None:
    argv = ["--rounds", "1", "--steps", "1", "--warmup", "0", "--batch-size", "2"]
    argv += ["--eval-batch-sizes", "2", "3", "--peers", "eager", "channels_last", "jittor"]
    assert bench.main([*argv, "--no-natten", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-2].startswith("Jittor / the best PyTorch peer: training step")
    with (tmp_path / "bench.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["peer"] for r in rows] == ["eager", "channels_last", "jittor"]
    for row in rows:
        measured = [m for m in bench_table.metrics([2, 3]) if not m.startswith("na2d_")]
        if row["peer"] != "channels_last":  # the eager peers time the op alone too
            measured += ["na2d_fwd_ms", "na2d_fwd_bwd_ms"]
        for metric in measured:
            assert float(row[metric]) > 0, (row["peer"], metric)
    table = (tmp_path / "bench.md").read_text()
    assert "[[2, 2, 9, 9, 25], [2, 2, 9, 9, 24], 5]" in table  # XXT's stage-3 na2d at 64x64
    assert "eval throughput, batch 3, deploy form (images/s)" in table
    ranked = [m for m in bench_table.metrics([2, 3]) if m.startswith(bench_table.SPEED_METRICS)]
    assert table.count("x (PyTorch ") == len(ranked) == 6


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--steps", "0"], "--steps must be at least 1"), (["--img-size", "48"], "multiple of 32")],
)
def test_bad_arguments_are_one_line(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    assert bench.main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_an_unwritable_output_folder_is_one_line_before_any_work(tmp_path: Path, capsys) -> None:
    taken = tmp_path / "a_file"
    taken.write_text("not a folder")
    assert bench.main(["--out", str(taken / "bench")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --out {taken / 'bench'}: folder ") and "\n" not in err, err
    assert "not writable" in err and not (taken / "bench").exists()
