"""Fixtures shared across the test packages: the tiny generated dataset and the training command
line that fits it (the training-run tests of engine/ and backends/ use them), and small tmpfs
mounts for the disk-full and read-only tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a minute (e.g. torch.compile)")


@dataclass(frozen=True)
class TinyData:
    """4 classes of 32x32 images in TinyImageNet layout, and the training command line for it."""

    root: Path

    def argv(self, out: Path, *extra: str) -> list[str]:
        """Training-script arguments for this data, writing to ``out``: batch 8, no workers."""
        return [
            "--data", str(self.root), "--num-classes", "4", "--img-size", "32",
            "--batch-size", "8", "--workers", "0", "--out", str(out), *extra,
        ]  # fmt: skip


@pytest.fixture(scope="session")
def make_tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int, int, int], TinyData]:
    """``make_tiny_data(train_per_class, val_per_class, seed)``: a fresh tiny dataset in its own
    temporary folder (one per call; module fixtures call it once each)."""
    from data.synthetic import generate

    def make(train_per_class: int, val_per_class: int, seed: int) -> TinyData:
        root = tmp_path_factory.mktemp("data") / "tiny"
        generate(root, classes=4, train_per_class=train_per_class, val_per_class=val_per_class,
                 size=32, seed=seed)  # fmt: skip
        return TinyData(root)

    return make


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], text=True, capture_output=True
    )
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here ({done.stderr.strip()})"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI runs as root: the tmpfs tests must not skip there
        pytest.skip(reason)


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """``mounted(name, options)``: a fresh tmpfs under tmp_path, unmounted afterwards."""
    folders: list[Path] = []

    def mount(name: str, options: str) -> Path:
        folders.append(tmp_path / name)
        _mount_tmpfs(folders[-1], options)
        return folders[-1]

    yield mount
    for folder in folders:
        subprocess.run(["umount", str(folder)], check=True)
