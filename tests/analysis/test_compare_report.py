"""The alignment study's report from synthetic log.csv files: complete studies of 1 and 3 seeds,
a partial one (an unfinished and a missing run), the numbers against a direct computation, and
``compare.py --report-only`` (one line and exit 2 when there is no study)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

import compare
from analysis.compare_data import collect, gaps, paired
from analysis.compare_report import conclusion, write_report
from analysis.compare_stats import paired_comparison
from analysis.compare_study import Run, StudySettings, plan, save_settings
from engine.logs import LOG_COLUMNS

EPOCHS = 4


def _write_log(folder: Path, top1: list[float], shift: float = 0.0) -> None:
    """A log.csv whose top-1 curve is ``top1`` (losses and top-5 follow from it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "log.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(LOG_COLUMNS)
        for e, acc in enumerate(top1, 1):
            loss = 3.0 - 0.1 * e + shift
            writer.writerow([e, loss, loss * 0.7, loss * 0.75, loss + 0.2, acc, acc + 30, 60, 150,
                             0.001])  # fmt: skip


def _study(root: Path, seeds: int, jittor_offsets: list[float], skip: tuple[str, ...] = ()) -> dict:
    """Runs whose top-1 curves rise with the epoch; Jittor's offset per seed as given. Returns
    the final top-1 per (role, seed)."""
    finals = {}
    for run in plan(seeds):
        if run.name in skip:
            continue
        base = [20.0 + 5 * e + run.seed for e in range(EPOCHS)]
        offset = {"torch": 0.0, "ulp": 0.3, "jittor": jittor_offsets[run.seed]}[run.role]
        curve = [v + offset * (e + 1) / EPOCHS for e, v in enumerate(base)]
        _write_log(root / run.name, curve, shift=0.01 * offset)
        finals[(run.role, run.seed)] = curve[-1]
    save_settings(root, StudySettings(None, EPOCHS, seeds, ["--workers", "0"]))
    return finals


def test_complete_study(tmp_path: Path) -> None:
    offsets = [0.8, -0.6, 0.5]
    finals = _study(tmp_path, 3, offsets)
    settings = StudySettings(None, EPOCHS, 3, [])
    data = write_report(tmp_path, settings)
    text = (tmp_path / "report.md").read_text()
    for name in ("report.png", "per_epoch.csv"):
        assert (tmp_path / name).stat().st_size > 0
    expected = paired_comparison(
        [finals[("torch", s)] for s in range(3)], [finals[("jittor", s)] for s in range(3)]
    )
    final = paired(data, "final_top1")
    assert final.mean_diff == pytest.approx(np.mean(offsets))
    assert final.p_tost == pytest.approx(expected.p_tost)
    assert f"{expected.p_ttest:.3f}" in text and f"±{expected.min_margin:.2f}" in text
    assert "Partial study" not in text and "**Conclusion.**" in text
    assert "t(0.95; 2) = 2.92" in text  # three seeds: ±1 point is out of reach, and it says so
    # per-epoch |Δ|: Jittor vs PyTorch grows linearly to the offset; the ulp control to 0.3
    per_epoch = gaps(data, "acc_top1")
    assert per_epoch["frameworks"][-1] == pytest.approx(np.mean(np.abs(offsets)))
    assert per_epoch["ulp"][-1] == pytest.approx(0.3)
    first = [[20.0 + s + o * b / EPOCHS for s, o in enumerate(offsets)] for b in (0, 1)]
    pairs = [abs(v[i] - v[j]) for v in first for i, j in ((0, 1), (0, 2), (1, 2))]
    assert per_epoch["seeds"][0] == pytest.approx(np.mean(pairs))  # both frameworks' pairs
    rows = list(csv.DictReader((tmp_path / "per_epoch.csv").open()))
    assert len(rows) == EPOCHS and float(rows[-1]["gap_ulp_acc_top1"]) == pytest.approx(0.3)


def test_partial_study_names_what_is_missing(tmp_path: Path) -> None:
    _study(tmp_path, 3, [0.5, -0.2, 0.4], skip=("seed2/jittor",))
    _write_log(tmp_path / "seed1/jittor", [20.0, 25.0])  # stopped after 2 of 4 epochs
    data = write_report(tmp_path, StudySettings(None, EPOCHS, 3, []))
    text = (tmp_path / "report.md").read_text()
    assert "`seed1/jittor` (incomplete (2 of 4 epochs))" in text
    assert "`seed2/jittor` (missing)" in text
    assert paired(data, "final_top1").n == 1  # only seed 0 has both runs complete
    assert "undefined (they need at least 2 seeds)" in text
    assert "With one seed the paired tests are undefined" in text
    # the curves still use every logged epoch: seed 1's Jittor run counts for epochs 1-2
    mean_n = data.stack("jittor", "acc_top1")
    assert np.isfinite(mean_n[1, :2]).all() and np.isnan(mean_n[1, 2:]).all()


def test_one_seed(tmp_path: Path) -> None:
    _study(tmp_path, 1, [0.5])
    machine = {"cpu": "Some CPU", "cpu_count": 2, "python": "3.11"}
    (tmp_path / "seed0/jittor/config.json").write_text(json.dumps({"machine": machine}))
    data = write_report(tmp_path, StudySettings(None, EPOCHS, 1, []))
    text = (tmp_path / "report.md").read_text()
    assert "| Some CPU, 2 cores |" in text and "| not recorded |" in text  # seed 0's PyTorch
    assert "(n=1, no std)" in text and "One seed: no standard deviation" in text
    assert math.isnan(paired(data, "best_top1").p_tost)
    assert np.isnan(gaps(data, "val_loss")["seeds"]).all()


def test_empty_study_and_conclusions(tmp_path: Path) -> None:
    data = collect(tmp_path, StudySettings(None, EPOCHS, 2, []))
    assert all(s.state == "missing" for s in data.statuses.values())
    assert conclusion(paired(data, "final_top1"), paired(data, "best_top1")).startswith("No seed")
    close = paired_comparison([40.0, 41.0, 39.5, 40.2], [40.1, 40.9, 39.6, 40.2])
    far = paired_comparison([40.0, 41.0, 39.5], [41.5, 42.6, 41.0])
    assert "are equivalent to PyTorch's within ±1 point" in conclusion(close, close)
    sentence = conclusion(far, close)
    assert "equivalence within ±1 point for best top-1" in sentence
    assert "but not for final top-1" in sentence
    assert "finds a mean difference of +1.53 points in final top-1" in sentence


def test_report_only_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert compare.main(["--report-only", "--out", str(tmp_path / "none")]) == 2
    assert "holds no study" in capsys.readouterr().err
    _study(tmp_path, 2, [0.1, 0.2])
    assert compare.main(["--report-only", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "paired seeds: 2" in out and (tmp_path / "report.md").is_file()
    assert "--workers 0" in (tmp_path / "report.md").read_text()  # the saved training flags
    assert Run("ulp", 0).name == "seed0/torch_ulp"


def test_maps_need_the_checkpoints_and_any_seed_can_have_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _study(tmp_path, 2, [0.1, 0.2])  # complete runs, logs only: a clone of the repository
    flags = ["--out", str(tmp_path), "--seeds", "2", "--epochs", str(EPOCHS), "--", "--workers"]
    assert compare.main([*flags, "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped") == 5
    assert "no ERF and Grad-CAM of seed 0: " in out and "seed0/jittor/checkpoint_latest" in out
    assert (
        "are drawn once both runs of the seed are complete" in (tmp_path / "report.md").read_text()
    )
    assert compare.main(["--maps-seed", "1", *flags, "0"]) == 0
    assert "no ERF and Grad-CAM of seed 1: " in capsys.readouterr().out
    assert compare.main(["--maps-seed", "-1", *flags, "0"]) == 2
    assert "--maps-seed must be 0 or more" in capsys.readouterr().err
    assert compare.main(["--maps-seed", "2", *flags, "0"]) == 2
    assert "--maps-seed 2: the study has seeds 0..1" in capsys.readouterr().err
    for name in ("seed1_erf.png", "seed1_gradcam.png"):
        (tmp_path / name).write_bytes(b"png")
    assert compare.main(["--report-only", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "## Seed 1's final checkpoints: ERF and Grad-CAM" in text
    assert "![ERF](seed1_erf.png)" in text and "![Grad-CAM](seed1_gradcam.png)" in text
    assert "Seed 0's final checkpoints" not in text
