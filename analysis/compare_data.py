"""The alignment study's numbers from its CSV logs, framework-free: per-epoch curves of every
run, the bands per framework, the three kinds of |Δ| per epoch, and the final and best
accuracies with the paired tests. ``analysis.compare_report`` writes them up.

The three |Δ| (all per epoch, in the metric's units):

- ``frameworks``: |Jittor - PyTorch| of the same seed (same initial weights and batches),
  averaged over the seeds that have both runs at that epoch;
- ``ulp``: |PyTorch from the ulp-shifted init - PyTorch| of seed 0: how far float round-off
  alone separates two runs of one framework;
- ``seeds``: the mean |Δ| between runs of different seeds (other weights and batch order), over
  all pairs within each framework, averaged over the two frameworks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.compare_stats import (
    ALPHA,
    MARGIN,
    PairedComparison,
    Spread,
    mean_pairwise_gap,
    paired_comparison,
    spread,
)
from analysis.compare_study import Run, RunStatus, StudySettings, epochs_of, plan, read_log
from analysis.compare_study import run_status as status_of

METRICS = {
    "train_loss": "train loss",
    "val_loss": "val loss",
    "acc_top1": "top-1 %",
    "acc_top5": "top-5 %",
}
FRAMEWORKS = {"torch": "PyTorch", "jittor": "Jittor"}
GAPS = {
    "frameworks": "Jittor vs PyTorch, same seed",
    "ulp": "seed 0 vs its ulp control",
    "seeds": "between seeds",
}
ENDPOINTS = {
    "final_top1": "final top-1 %",
    "final_top5": "final top-5 %",
    "best_top1": "best top-1 %",
    "best_top5": "best top-5 %",
}
TESTED = ("final_top1", "best_top1")


@dataclass
class StudyData:
    """Every run's curves over epochs 1..E (NaN where not logged) and its status."""

    settings: StudySettings
    statuses: dict[Run, RunStatus]
    curves: dict[Run, dict[str, np.ndarray]]
    model: str | None  # from seed 0's config.json, when there is one
    machines: dict[Run, str]  # the CPU each run's config.json names ("not recorded" if none)

    @property
    def epochs(self) -> int:
        return self.settings.epochs

    def runs(self, role: str) -> list[Run]:
        return [r for r in self.statuses if r.role == role]

    def complete(self, run: Run) -> bool:
        return self.statuses[run].state == "complete"

    def stack(self, role: str, metric: str) -> np.ndarray:
        """Seeds x epochs of one framework's runs (every planned seed; NaN rows if missing)."""
        return np.stack([self.curves[r][metric] for r in self.runs(role)])


def collect(root: Path, settings: StudySettings) -> StudyData:
    """Read every run's log.csv under the study folder ``root``."""
    statuses, curves, configs = {}, {}, {}
    for run in plan(settings.seeds):
        statuses[run] = status_of(root, run, settings.epochs)
        rows = read_log(root / run.name / "log.csv")
        curves[run] = {m: epochs_of(rows, m, settings.epochs) for m in METRICS}
        configs[run] = _config(root, run)
    model = configs[Run("torch", 0)].get("model")
    model_name = f"overlock_{model}" if isinstance(model, str) else None
    machines = {run: _machine(config) for run, config in configs.items()}
    return StudyData(settings, statuses, curves, model_name, machines)


def _config(root: Path, run: Run) -> dict:
    """The run's config.json ({} when it is missing or unreadable)."""
    try:
        config = json.loads((root / run.name / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _machine(config: dict) -> str:
    machine = config.get("machine")
    if not isinstance(machine, dict) or not machine.get("cpu"):
        return "not recorded"
    return f"{machine['cpu']}, {machine.get('cpu_count', '?')} cores"


def band(data: StudyData, role: str, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per epoch: (mean, sample std, runs counted) over the seeds of one framework."""
    stacked = data.stack(role, metric)
    per_epoch = [spread(column) for column in stacked.T]
    return (
        np.array([s.mean for s in per_epoch]),
        np.array([s.std for s in per_epoch]),
        np.array([s.n for s in per_epoch]),
    )


def _nanmean_rows(rows: np.ndarray) -> np.ndarray:
    counts = (~np.isnan(rows)).sum(axis=0)
    return np.where(counts > 0, np.nansum(rows, axis=0) / np.maximum(counts, 1), math.nan)


def gaps(data: StudyData, metric: str) -> dict[str, np.ndarray]:
    """The three per-epoch |Δ| of the module docstring for one metric."""
    torch_runs, jittor_runs = data.stack("torch", metric), data.stack("jittor", metric)
    frameworks = _nanmean_rows(np.abs(jittor_runs - torch_runs))
    ulp = np.abs(data.curves[Run("ulp", 0)][metric] - data.curves[Run("torch", 0)][metric])
    seeds = _nanmean_rows(np.stack([mean_pairwise_gap(torch_runs), mean_pairwise_gap(jittor_runs)]))
    return {"frameworks": frameworks, "ulp": ulp, "seeds": seeds}


def per_seed_gaps(data: StudyData, metric: str) -> np.ndarray:
    """Seeds x epochs |Jittor - PyTorch| of the same seed (the points behind ``frameworks``)."""
    return np.abs(data.stack("jittor", metric) - data.stack("torch", metric))


def endpoint(data: StudyData, run: Run, which: str) -> float:
    """A complete run's final or best top-1/top-5 (best: the maximum over epochs 1..E of that
    column; top-1 picks checkpoint_best); NaN for an unfinished run."""
    if not data.complete(run):
        return math.nan
    kind, k = which.split("_")
    values = data.curves[run]["acc_" + k]
    return float(values[-1]) if kind == "final" else float(np.nanmax(values))


def endpoint_spread(data: StudyData, role: str, which: str) -> Spread:
    """Mean ± std over the complete runs of one framework."""
    return spread([endpoint(data, r, which) for r in data.runs(role)])


def paired_seeds(data: StudyData) -> list[int]:
    """The seeds whose PyTorch and Jittor runs are both complete."""
    return [
        r.seed
        for r in data.runs("torch")
        if data.complete(r) and data.complete(Run("jittor", r.seed))
    ]


def paired(
    data: StudyData, which: str, margin: float = MARGIN, alpha: float = ALPHA
) -> PairedComparison:
    """The paired tests of Jittor - PyTorch over the seeds with both runs complete."""
    seeds = paired_seeds(data)
    torch_values = [endpoint(data, Run("torch", s), which) for s in seeds]
    jittor_values = [endpoint(data, Run("jittor", s), which) for s in seeds]
    return paired_comparison(torch_values, jittor_values, margin, alpha)


def missing_runs(data: StudyData) -> list[RunStatus]:
    """The runs that are not complete, in plan order."""
    return [s for s in data.statuses.values() if s.state != "complete"]


def gap_summary(values: Sequence[float]) -> float:
    """Mean over the epochs that have a value (NaN if none)."""
    x = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(x)) if np.any(~np.isnan(x)) else math.nan
