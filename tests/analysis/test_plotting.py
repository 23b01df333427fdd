"""The training-curve plots and tables (analysis.plotting, plot.py, plot_torch.py): final/best/gap
tables on hand-made logs, unequal lengths, bad logs, the twins' primary run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import plot
import plot_torch
from analysis import plotting
from core.errors import UsageError
from engine.logs import LOG_COLUMNS


def _write_log(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(LOG_COLUMNS)).to_csv(path, index=False)
    return path


def _rows(val_loss, top1, top5=None, time_s=None) -> list[dict]:
    n = len(val_loss)
    top5 = top5 or [min(100.0, a + 20) for a in top1]
    time_s = time_s or [10.0] * n
    return [
        {
            "epoch": e + 1,
            "train_loss": 4.0 - 0.5 * e,
            "train_loss_main": 3.0 - 0.4 * e,
            "train_loss_aux": 2.5 - 0.25 * e,
            "val_loss": val_loss[e],
            "acc_top1": top1[e],
            "acc_top5": top5[e],
            "epoch_time_s": time_s[e],
            "train_images_per_s": 100.0,
            "lr": 1e-3,
        }
        for e in range(n)
    ]


def test_summary_table_final_and_best(tmp_path: Path) -> None:
    path = _write_log(
        tmp_path / "a" / "log.csv",
        _rows([2.0, 1.5, 1.7, 1.6], [10.0, 30.0, 30.0, 25.0], time_s=[100.0, 5.0, 7.0, 6.0]),
    )
    run = plotting.read_log(path)
    assert run.label == "a" and run.epochs == 4
    row = plotting.summary_table([run]).iloc[0]
    assert row["final val loss"] == 1.6 and row["final top-1 %"] == 25.0
    assert row["best top-1 %"] == 30.0 and row["best top-1 epoch"] == 2  # first of the tie
    assert row["min val loss"] == 1.5 and row["min val loss epoch"] == 2
    assert row["final train loss"] == pytest.approx(4.0 - 1.5)
    assert row["median epoch time s"] == 6.5 and row["total time s"] == 118.0


def test_gap_table_per_epoch(tmp_path: Path) -> None:
    a = plotting.read_log(_write_log(tmp_path / "jit" / "log.csv", _rows([2.0, 1.5], [10, 20])))
    b = plotting.read_log(_write_log(tmp_path / "tor" / "log.csv", _rows([2.25, 1.0], [15, 5])))
    gap = plotting.gap_table(a, b)
    assert gap.note == ""
    assert gap.table["epoch"].tolist() == [1, 2]
    assert gap.table["|Δ val loss|"].tolist() == [0.25, 0.5]
    assert gap.table["Δ top-1 %"].tolist() == [5.0, -15.0]  # second minus first
    assert gap.table["|Δ train loss|"].tolist() == [0.0, 0.0]
    assert gap.max_abs("Δ top-1 %") == 15.0
    report = plotting.report_markdown([a, b])
    assert (
        "| 2 | 3.5000 | 3.5000 | 0.00e+00 | 1.5000 | 1.0000 | 5.00e-01 | 20.00 | 5.00 |" in report
    )
    assert "max |Δ val loss| 5.00e-01" in report


def test_unequal_lengths_compare_common_epochs(tmp_path: Path) -> None:
    a = plotting.read_log(
        _write_log(tmp_path / "long" / "log.csv", _rows([3, 2, 1, 1, 1], [1] * 5))
    )
    b = plotting.read_log(_write_log(tmp_path / "short" / "log.csv", _rows([3, 2.5, 1], [2] * 3)))
    gap = plotting.gap_table(a, b)
    assert gap.table["epoch"].tolist() == [1, 2, 3]
    assert gap.table["|Δ val loss|"].tolist() == [0.0, 0.5, 0.0]
    assert "3 common epochs" in gap.note and "long: 5 epochs" in gap.note
    assert gap.note in plotting.report_markdown([a, b])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("epoch,train_loss\n1,2.0\n", "missing column(s) train_loss_main"),
        (",".join(LOG_COLUMNS) + "\n", "no epochs"),
        (",".join(LOG_COLUMNS) + "\n1,x" + ",1" * (len(LOG_COLUMNS) - 2) + "\n", "train_loss"),
    ],
)
def test_bad_logs_are_usage_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "log.csv"
    path.write_text(content)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plotting.read_log(path)
    with pytest.raises(UsageError, match="no such log file"):
        plotting.read_log(tmp_path / "missing.csv")


def test_log_spec_labels(tmp_path: Path) -> None:
    folder = tmp_path / "torch"
    _write_log(folder / "log.csv", _rows([1.0], [1.0]))
    assert plotting.parse_log_spec(f"{folder}:PyTorch run") == (folder / "log.csv", "PyTorch run")
    assert plotting.parse_log_spec(str(folder)) == (folder / "log.csv", None)
    runs = plotting.load_runs([str(folder), str(folder)])
    assert [r.label for r in runs] == ["torch", "torch#2"]


@pytest.mark.parametrize(("script", "primary"), [(plot, "jittor"), (plot_torch, "torch")])
def test_plot_twins_differ_only_in_primary(tmp_path, monkeypatch, capsys, script, primary) -> None:
    monkeypatch.chdir(tmp_path)  # the default logs are logs/jittor and logs/torch
    _write_log(Path("logs/jittor/log.csv"), _rows([2.0, 1.0, 0.5], [10, 20, 30]))
    _write_log(Path("logs/torch/log.csv"), _rows([2.0, 1.25], [10, 25]))
    assert script.main([]) == 0
    table = Path("visualization/training_metrics.md").read_text()
    assert capsys.readouterr().out.startswith(table)
    runs = [line for line in table.splitlines() if line.startswith("- **")]
    assert runs[0].startswith(f"- **{primary}**")
    assert f"Δ = {'torch' if primary == 'jittor' else 'jittor'} − {primary}" in table
    assert "2 common epochs" in table
    from PIL import Image

    with Image.open("visualization/training_metrics.png") as image:  # 12 x 7 in at 150 dpi
        assert image.size == (1800, 1050)
