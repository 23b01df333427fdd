"""--compile: train_torch.py trains and evaluates through torch.compile with the numbers of an
eager run (float tolerance) and reports the compile time apart; train.py takes the flag as a
no-op (Jittor always compiles its kernels) and says so."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import train
import train_torch

if TYPE_CHECKING:
    from tests.conftest import TinyData

TWO_STEPS = ("--epochs", "1", "--max-batches", "2")


@pytest.fixture(scope="module")
def tiny_data(make_tiny_data) -> TinyData:
    return make_tiny_data(train_per_class=4, val_per_class=2, seed=7)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_two_compiled_steps_give_the_losses_of_eager(
    tiny_data: TinyData, tmp_path: Path, capsys
) -> None:
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    assert train_torch.main(tiny_data.argv(eager, *TWO_STEPS)) == 0
    capsys.readouterr()
    assert train_torch.main(tiny_data.argv(compiled, *TWO_STEPS, "--compile")) == 0
    out = capsys.readouterr().out
    assert "compiled (torch.compile): first training step " in out, out
    want, got = _rows(eager / "steps.csv"), _rows(compiled / "steps.csv")
    assert len(want) == len(got) == 2
    for w, g in zip(want, got, strict=True):
        for column in ("loss", "loss_main", "loss_aux"):
            assert abs(float(g[column]) - float(w[column])) <= 1e-4, (column, w, g)
    (w,), (g,) = _rows(eager / "log.csv"), _rows(compiled / "log.csv")
    assert abs(float(g["val_loss"]) - float(w["val_loss"])) <= 1e-4, (w, g)


def test_jittor_takes_compile_as_a_no_op_with_a_note(
    tiny_data: TinyData, tmp_path: Path, capsys
) -> None:
    argv = tiny_data.argv(tmp_path, "--epochs", "1", "--max-batches", "1", "--compile")
    assert train.main(argv) == 0
    assert "note: --compile changes nothing in Jittor" in capsys.readouterr().out
