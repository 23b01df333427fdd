"""bench.py: the summary arithmetic, and one real (tiny) run of both frameworks end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import bench


def test_summary_is_the_median_over_rounds_and_the_table_gives_ratios() -> None:
    rows = [
        {"framework": "torch", "step_ms": s, "peak_mem_mib": 100.0} for s in (10.0, 30.0, 20.0)
    ] + [{"framework": "jittor", "step_ms": s, "peak_mem_mib": 50.0} for s in (8.0, 9.0, 40.0)]
    summary = bench.summarise(rows)
    assert summary == {
        "torch": {"step_ms": 20.0, "peak_mem_mib": 100.0},
        "jittor": {"step_ms": 9.0, "peak_mem_mib": 50.0},
    }
    table = bench.markdown(summary, "context")
    assert "| training step (fwd+bwd+AdamW) (ms) | 20.0 | 9.00 | 0.45x |" in table
    assert "| peak memory (MiB) | 100 | 50.0 | 0.50x |" in table
    assert "NATTEN" not in table


def test_tiny_run_of_both_frameworks(tmp_path: Path, capsys) -> None:
    argv = ["--rounds", "1", "--steps", "1", "--warmup", "0", "--batch-size", "2"]
    assert bench.main([*argv, "--no-natten", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-2].startswith("Jittor/PyTorch: step time ")
    with (tmp_path / "bench.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["framework"] for r in rows] == ["torch", "jittor"]
    for row in rows:
        for metric in bench.METRICS:
            assert float(row[metric]) > 0, (row["framework"], metric)
    table = (tmp_path / "bench.md").read_text()
    assert "[[2, 2, 9, 9, 25], [2, 2, 9, 9, 24], 5]" in table  # XXT's stage-3 na2d at 64x64
    assert table.count("x |") == len(bench.METRICS)


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
