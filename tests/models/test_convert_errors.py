"""Weights that do not fit, and destinations that cannot be written, as a user meets them:

- ``models.weights.check_state``: counts and a few example keys (not all of them), and the
  --model / --num-classes the weights do fit; ``train_torch.py --init`` with another variant's
  file says so in one line;
- ``python -m models.convert``: impossible values are rejected before anything is read; a
  read-only destination folder (a real read-only tmpfs) and a full disk (a real 64 KiB tmpfs)
  are one line naming the destination, and nothing is written.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import CheckpointError
from models import overlock_torch
from models.weights import EXAMPLE_KEYS, check_state, compare_state, expected_shapes

REPO = Path(__file__).resolve().parents[2]


def _zeros_state(model: str, num_classes: int) -> dict[str, np.ndarray]:
    """A state dict of ``model`` (all zeros; built on the meta device, so no init cost)."""
    with torch.device("meta"):
        net = getattr(overlock_torch, model)(num_classes=num_classes)
    return {k: np.zeros(v.shape, np.float32) for k, v in net.state_dict().items()}


def _check_error(state: dict, *args) -> str:
    with pytest.raises(CheckpointError) as caught:
        check_state(state, *args)
    return str(caught.value)


# ---------------------------------------------------------------------------------------------
# check_state's message
# ---------------------------------------------------------------------------------------------


def test_another_variant_is_counted_and_named() -> None:
    state = _zeros_state("overlock_xt", 4)
    message = _check_error(state, "overlock_xxt", 4)
    mismatch = compare_state(state, expected_shapes("overlock_xxt", 4))
    assert len(mismatch.missing) > EXAMPLE_KEYS and len(mismatch.unexpected) > EXAMPLE_KEYS
    assert len(message) < 1000 and "\n" not in message  # it used to be 72,144 characters
    assert message.startswith("weights do not fit overlock_xxt (num_classes=4): ")
    assert f"{len(mismatch.missing)} missing keys: " + ", ".join(mismatch.missing[:3]) in message
    assert f"... ({len(mismatch.missing) - 3} more)" in message
    assert f"{len(mismatch.unexpected)} unexpected keys: {mismatch.unexpected[0]}" in message
    assert mismatch.unexpected[EXAMPLE_KEYS] not in message
    assert f"{len(mismatch.mismatched)} shape mismatches: {mismatch.mismatched[0]}" in message
    assert message.endswith("; they fit overlock_xt: pass --model xt")


def test_another_classifier_width_names_num_classes() -> None:
    state = _zeros_state("overlock_xxt", 20)
    message = _check_error(state, "overlock_xxt", 7)
    assert message.startswith("weights do not fit overlock_xxt (num_classes=7): 4 shape mismatches")
    assert message.endswith("; they fit overlock_xxt with 20 classes: pass --num-classes 20")
    both = _check_error(state, "overlock_xt", 7)
    assert both.endswith(
        "; they fit overlock_xxt with 20 classes: pass --model xxt --num-classes 20"
    )
    # Recognising the variant (no model given) still names the width that fits.
    assert _check_error(state, None, 7).endswith("with 20 classes: pass --num-classes 20")


def test_the_flag_follows_the_command() -> None:
    state = _zeros_state("overlock_xt", 4)
    full_names = _check_error(state, "overlock_xxt", 4, lambda name: name)  # models.convert
    assert full_names.endswith("; they fit overlock_xt: pass --model overlock_xt")
    deploy = _zeros_state("overlock_xxt_reparam", 4)  # the training scripts train no deploy form
    message = _check_error(deploy, "overlock_xxt", 4)
    assert message.endswith(
        "; they are overlock_xxt_reparam weights, which this command does not take"
    )


def test_weights_that_fit_nothing_get_no_hint() -> None:
    state = _zeros_state("overlock_xxt", 4)
    state["extra.weight"] = np.zeros(3, np.float32)
    message = _check_error(state, "overlock_xxt", 4)
    assert message == (
        "weights do not fit overlock_xxt (num_classes=4): 1 unexpected key: extra.weight"
    )


def test_init_with_another_variant_is_one_line(make_tiny_data, tmp_path: Path) -> None:
    """train_torch.py --init with an XT file while training the default XXT."""
    data = make_tiny_data(1, 1, 0)
    wrong = tmp_path / "overlock_xt_weights.pth"
    torch.save({k: torch.from_numpy(v) for k, v in _zeros_state("overlock_xt", 4).items()}, wrong)
    out = tmp_path / "run"
    argv = data.argv(out, "--epochs", "1", "--max-batches", "1", "--init", str(wrong))
    proc = subprocess.run(
        [sys.executable, "train_torch.py", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith("error: ") and "weights do not fit overlock_xxt" in lines[0]
    assert len(lines[0]) < 1000 and lines[0].endswith("they fit overlock_xt: pass --model xt")
    written = [p.name for p in out.rglob("*")] if out.exists() else []
    assert not [name for name in written if name.endswith((".pth", ".tmp"))], written


# ---------------------------------------------------------------------------------------------
# python -m models.convert
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xxt_pth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("convert") / "xxt.pth"
    torch.manual_seed(0)
    torch.save(overlock_torch.overlock_xxt(num_classes=4).state_dict(), path)
    return path


def _convert(*argv: str) -> tuple[int, str]:
    """Exit status and the one line on stderr of ``python -m models.convert ARGV``."""
    proc = subprocess.run(
        [sys.executable, "-m", "models.convert", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.returncode, lines[0]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--num-classes", "-3"], "argument --num-classes: must be at least 1 (got -3)"),
        (["--num-classes", "0"], "argument --num-classes: must be at least 1 (got 0)"),
        (["--num-classes", "ten"], "argument --num-classes: not a whole number: 'ten'"),
        (["--model", "xt"], "argument --model: invalid choice: 'xt'"),
    ],
)
def test_impossible_values_are_rejected_before_reading(tmp_path: Path, flags, expected) -> None:
    src = tmp_path / "not_there.pth"  # never read: the values are checked first
    code, line = _convert(str(src), str(tmp_path / "out.pkl"), *flags)
    assert code == 2
    assert line.startswith("python -m models.convert: error: ") and expected in line
    assert "weights" not in line and list(tmp_path.iterdir()) == []


def test_a_folder_as_destination(xxt_pth: Path, tmp_path: Path) -> None:
    folder = tmp_path / "weights.pkl"
    folder.mkdir()
    code, line = _convert(str(xxt_pth), str(folder))
    assert code == 2 and line == (
        f"error: DST {folder} is a folder; give the file to write, e.g. {folder / 'w.pkl'}"
    )
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_a_read_only_destination_is_one_line(xxt_pth: Path, mounted, suffix: str) -> None:
    folder = mounted("ro", "size=64k,ro")
    dst = folder / f"xxt{suffix}"
    code, line = _convert(str(xxt_pth), str(dst))
    assert code == 2
    assert line == (
        f"error: DST {dst}: folder {folder} is not writable (Read-only file system); "
        "choose another one"
    )
    assert list(folder.iterdir()) == []


def _fill(folder: Path) -> None:
    """Leave less than one page free."""
    with (folder / "filler").open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_a_full_disk_is_one_line_and_leaves_nothing(xxt_pth: Path, mounted, suffix: str) -> None:
    folder = mounted("small", "size=64k")
    _fill(folder)
    dst = folder / f"xxt{suffix}"
    code, line = _convert(str(xxt_pth), str(dst))
    assert code == 1
    assert line.startswith(f"error: No space left on device ({dst}); free some space"), line
    assert [p.name for p in folder.iterdir()] == ["filler"]  # no partial file, no temporary
