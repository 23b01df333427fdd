"""Output folders that cannot be written, as a user meets them (a real read-only tmpfs, a real
64 KiB tmpfs filled up): evaluate, erf, gradcam and plot say so in one line before any work
(the backend is never built), name the flag and the folder, not a hidden temporary file; plot's
figure and table, ERF's figure/CSV/maps and Grad-CAM's figure/maps are written all or none.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.erf import run_erf
from analysis.evaluate import run_evaluation
from analysis.gradcam import run_gradcam
from analysis.output import write_together
from analysis.plotting import run_cli
from backends.torch_backend import TorchBackend
from core.cli import main_guard
from engine.logs import LOG_COLUMNS
from models import overlock_torch
from models.weights import save_state_dict

NUM_CLASSES = 4


class NoWorkBackend(TorchBackend):
    """A backend that fails the test if the analysis gets as far as building it."""

    def __init__(self, *args, **kwargs) -> None:
        raise AssertionError("the work started before the output folder was checked")


def _fill(folder: Path) -> None:
    """Leave less than one page free."""
    with (folder / "filler").open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC


def _one_line(run: Callable[[], object], capsys, code: int) -> str:
    """What main_guard (every entry script's) prints for ``run``: one line, exit ``code``."""
    assert main_guard(run) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert ".tmp" not in lines[0] and ".write-test" not in lines[0]  # no hidden file named
    return lines[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random XXT checkpoint and a tiny 64x64 dataset in TinyImageNet layout."""
    from data.synthetic import generate

    root = tmp_path_factory.mktemp("output_errors")
    torch.manual_seed(0)
    model = overlock_torch.overlock_xxt(num_classes=NUM_CLASSES)
    save_state_dict({k: v.numpy() for k, v in model.state_dict().items()}, root / "xxt.pth")
    generate(root / "data", NUM_CLASSES, 1, 1, 64, 0)  # classes, train/val per class, size, seed
    return {"checkpoint": root / "xxt.pth", "data": root / "data"}


def _read_only_message(folder: Path, flag: str, path: Path) -> str:
    return (
        f"error: {flag} {path}: folder {folder} is not writable (Read-only file system); "
        "choose another one"
    )


@pytest.mark.parametrize("analysis", ["evaluate", "erf", "gradcam"])
def test_a_read_only_out_is_found_before_the_work(inputs, mounted, capsys, analysis) -> None:
    folder = mounted("ro", "size=64k,ro")
    suffix = ".json" if analysis == "evaluate" else ".png"
    out = folder / "results" / f"{analysis}{suffix}"  # a subfolder that cannot be made either
    argv = ["--checkpoint", str(inputs["checkpoint"]), "--data", str(inputs["data"])]
    argv += ["--out", str(out)]
    run = {"evaluate": run_evaluation, "erf": run_erf, "gradcam": run_gradcam}[analysis]
    line = _one_line(lambda: run(argv, "", NoWorkBackend), capsys, 2)
    assert line.startswith(f"error: --out {out}: folder {out.parent} is not writable"), line
    assert line.endswith("; choose another one")
    assert list(folder.iterdir()) == []


def _log(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{column: 1.0 for column in LOG_COLUMNS} | {"epoch": e} for e in (1, 2)]
    pd.DataFrame(rows, columns=list(LOG_COLUMNS)).to_csv(path, index=False)
    return path


def _plot(log: Path, out: Path, table: Path) -> Callable[[], None]:
    argv = ["--logs", str(log), "--out", str(out), "--table", str(table)]
    return lambda: run_cli(argv, "torch", "jittor", "")


def test_plot_with_a_read_only_table_writes_no_figure(tmp_path: Path, mounted, capsys) -> None:
    log = _log(tmp_path / "run" / "log.csv")
    folder = mounted("ro", "size=64k,ro")
    out, table = tmp_path / "figures" / "metrics.png", folder / "metrics.md"
    line = _one_line(_plot(log, out, table), capsys, 2)
    assert line == _read_only_message(folder, "--table", table)
    assert list(out.parent.iterdir()) == []  # the figure was not drawn first


def test_plot_with_a_read_only_figure_folder(tmp_path: Path, mounted, capsys) -> None:
    log = _log(tmp_path / "run" / "log.csv")
    folder = mounted("ro", "size=64k,ro")
    out, table = folder / "metrics.png", tmp_path / "tables" / "metrics.md"
    line = _one_line(_plot(log, out, table), capsys, 2)
    assert line == _read_only_message(folder, "--out", out)
    assert not table.exists()


def test_plot_on_a_full_disk_writes_neither(tmp_path: Path, mounted, capsys) -> None:
    log = _log(tmp_path / "run" / "log.csv")
    full = mounted("small", "size=64k")
    _fill(full)  # a file can still be created there, but a 100 KB figure does not fit
    out, table = full / "metrics.png", tmp_path / "tables" / "metrics.md"
    line = _one_line(_plot(log, out, table), capsys, 1)
    assert line.startswith(f"error: No space left on device ({out}); free some space"), line
    assert [p.name for p in full.iterdir()] == ["filler"]
    assert list(table.parent.iterdir()) == []  # nor the table: both or neither


def test_write_together_keeps_the_previous_files(tmp_path: Path, mounted) -> None:
    full = mounted("small", "size=64k")
    first, second = tmp_path / "a.md", full / "b.npz"
    write_together({first: b"old a", second: b"old b"})
    _fill(full)
    with pytest.raises(OSError) as caught:
        write_together({first: b"new a", second: np.zeros(50_000).tobytes()})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(second)
    assert first.read_bytes() == b"old a" and second.read_bytes() == b"old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "small"]
    assert sorted(p.name for p in full.iterdir()) == ["b.npz", "filler"]
