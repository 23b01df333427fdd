"""Atomic writes and their errors as a user meets them: a full disk (a real small tmpfs), a
read-only file system, files left by a killed writer, and the one-line reports."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.cli import ArgumentParser, main_guard
from core.files import atomic_write_bytes, check_writable_folder, remove_stale_temporaries
from core.serialization import read_checkpoint, write_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], text=True,
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here ({done.stderr.strip()})"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI runs as root: the disk-full tests must not skip there
        pytest.skip(reason)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB file system: writes beyond it fail with ENOSPC, as on a full disk."""
    folder = tmp_path / "small"
    _mount_tmpfs(folder, "size=64k")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _fill(folder: Path) -> None:
    """Leave less than one page free."""
    with (folder / "filler").open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC


def test_a_full_disk_names_the_destination_and_keeps_the_old_file(small_disk: Path) -> None:
    target = small_disk / "log.csv"
    atomic_write_bytes(target, b"old\n")
    _fill(small_disk)
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(target, b"x" * 100_000)
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(target)  # not the hidden temporary file
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "log.csv"]


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_a_checkpoint_on_a_full_disk_is_an_os_error_with_the_file(
    small_disk: Path, suffix: str
) -> None:
    target = small_disk / f"checkpoint_latest{suffix}"
    write_checkpoint({"epoch": 1, "w": np.arange(4.0)}, target)
    _fill(small_disk)
    with pytest.raises(OSError) as caught:  # torch.save alone raises RuntimeError here
        write_checkpoint({"epoch": 2, "w": np.zeros(50_000)}, target)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert read_checkpoint(target)["epoch"] == 1
    assert sorted(p.name for p in small_disk.iterdir()) == ["checkpoint_latest" + suffix, "filler"]


def test_main_guard_reports_a_full_disk_in_one_line(small_disk: Path, capsys) -> None:
    _fill(small_disk)
    target = small_disk / "figure.png"
    assert main_guard(lambda: atomic_write_bytes(target, b"x" * 100_000)) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert str(target) in lines[0] and "free some space" in lines[0]


def test_a_read_only_folder_is_found_before_the_work(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    _mount_tmpfs(folder, "size=64k,ro")
    try:
        with pytest.raises(ValueError, match=r"--out: folder .*ro is not writable"):
            check_writable_folder(folder, "--out")
        with pytest.raises(OSError) as caught:
            atomic_write_bytes(folder / "x.csv", b"1")
        assert caught.value.errno == errno.EROFS and caught.value.filename == str(folder / "x.csv")
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_temporaries_of_killed_writers_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint_latest.pth"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    stale = tmp_path / f".{target.name}.{dead}.abc123.tmp"
    live = tmp_path / f".{target.name}.{os.getpid()}.def456.tmp"  # a writer still at work
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    atomic_write_bytes(target, b"new")
    assert not stale.exists() and live.exists() and target.read_bytes() == b"new"
    assert remove_stale_temporaries(target) == []


def test_a_command_line_error_is_one_line(capsys) -> None:
    parser = ArgumentParser(prog="train.py")
    parser.add_argument("--epochs", type=int)
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--epochs", "many"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["train.py: error: argument --epochs: invalid int value: 'many' "
                   "(see train.py --help)"]  # fmt: skip
