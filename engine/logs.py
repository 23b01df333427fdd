"""The run's files: the per-epoch and per-step CSV logs (their columns are the format that plots
and the comparison read) and config.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.files import atomic_write_bytes

LOG_COLUMNS = (
    "epoch",
    "train_loss",
    "train_loss_main",
    "train_loss_aux",
    "val_loss",
    "acc_top1",
    "acc_top5",
    "epoch_time_s",
    "train_images_per_s",
    "lr",
)
EMA_COLUMNS = ("ema_val_loss", "ema_acc_top1", "ema_acc_top5")  # with --ema-decay
STEP_COLUMNS = ("epoch", "step", "loss", "loss_main", "loss_aux")
LATEST = "checkpoint_latest"
BEST = "checkpoint_best"


class CsvLog:
    """A CSV log (OUT/log.csv: one row per epoch; OUT/steps.csv: one per step), rewritten
    atomically after each epoch. On resume only the rows that ``keep`` accepts (those up to the
    resumed position) are kept, so the log never holds an epoch or a step twice.
    """

    def __init__(
        self,
        path: Path,
        columns: Sequence[str],
        keep: Callable[[Mapping[str, str]], bool] | None = None,
    ) -> None:
        self.path = path
        self.columns = tuple(columns)
        self.rows: list[dict[str, str]] = []
        if keep is not None and path.is_file():
            with path.open(newline="") as handle:
                self.rows = [r for r in csv.DictReader(handle) if keep(r)]

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            missing = [c for c in self.columns if c not in row]
            if missing:
                raise KeyError(f"log row lacks columns {missing}")
            self.rows.append({c: _fmt(row[c]) for c in self.columns})
        cols = self.columns
        lines = [",".join(cols)] + [",".join(r[c] for c in cols) for r in self.rows]
        atomic_write_bytes(self.path, ("\n".join(lines) + "\n").encode())


class MainOnlyLog(CsvLog):
    """A CsvLog that only the main process writes (the others keep nothing)."""

    def __init__(self, main: bool, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.main = main

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        if self.main:
            super().extend(rows)


def _fmt(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return str(value)


def machine() -> dict[str, Any]:
    """The CPU model, its logical cores and Python's version: float results can differ in the
    last bits between CPUs (their kernels pick other vector instructions), so runs compared
    with each other should say where they ran."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            names = [
                line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass  # not Linux: platform's name
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version()}


def write_config(out: Path, args: argparse.Namespace, extra: Mapping[str, Any]) -> None:
    """OUT/config.json: every argument and the environment (the backend's ``extra`` and the
    ``machine``), so a run can be reproduced; rewritten when the run resumes."""
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config.update(extra)
    config["machine"] = machine()
    atomic_write_bytes(out / "config.json", (json.dumps(config, indent=2) + "\n").encode())
