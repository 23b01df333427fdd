"""The tiny generated dataset and training command line that the training-run tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from data.synthetic import generate


def make_tiny_data(
    factory: pytest.TempPathFactory, train_per_class: int, val_per_class: int, seed: int
) -> Path:
    """4 classes of 32x32 images in TinyImageNet layout, in a fresh temporary folder."""
    root = factory.mktemp("data") / "tiny"
    generate(root, classes=4, train_per_class=train_per_class, val_per_class=val_per_class,
             size=32, seed=seed)  # fmt: skip
    return root


def tiny_argv(data: Path, out: Path, *extra: str) -> list[str]:
    """Training-script arguments for :func:`make_tiny_data`'s data, batch 8, no workers."""
    return [
        "--data", str(data), "--num-classes", "4", "--img-size", "32", "--batch-size", "8",
        "--workers", "0", "--out", str(out), *extra,
    ]  # fmt: skip
