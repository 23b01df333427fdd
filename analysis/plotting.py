"""Training curves and metric tables from the CSV logs of train.py / train_torch.py.

Framework-free (pandas + matplotlib); ``plot.py`` and ``plot_torch.py`` are thin entry points that
differ only in which run is primary by default. A run is one ``log.csv`` (one row per epoch, the
columns of ``engine.logs.LOG_COLUMNS``). The first run is the primary one: drawn first (a wide
translucent solid line, so a second run that coincides with it stays visible on top) and listed
first; the per-epoch gap table compares the first two runs over the epochs both have.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.output import DPI, FONT_SIZE, check_output, figure_png, write_together
from core.cli import ArgumentParser, HelpFormatter
from core.errors import UsageError
from engine.logs import LOG_COLUMNS

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.figure import Figure

# Columns every panel or table needs: those the training scripts log, less the optional two.
OPTIONAL_COLUMNS = ("train_images_per_s", "lr")
REQUIRED_COLUMNS = tuple(c for c in LOG_COLUMNS if c not in OPTIONAL_COLUMNS)
DEFAULT_FIGURE = Path("visualization") / "training_metrics.png"
FIGSIZE = (12.0, 7.0)  # inches; report size at DPI


@dataclass(frozen=True)
class RunLog:
    """One training run: its label, where its log came from, one row per epoch."""

    label: str
    path: Path
    data: pd.DataFrame  # sorted by epoch, numeric columns only, index 0..n-1

    @property
    def epochs(self) -> int:
        return len(self.data)


def parse_log_spec(spec: str) -> tuple[Path, str | None]:
    """``PATH[:LABEL]`` -> (path, label or None). A folder means ``folder/log.csv``."""
    path, sep, label = spec.rpartition(":")
    if not sep or not path or "/" in label:  # no label given (or the ':' is part of the path)
        path, label = spec, ""
    resolved = Path(path)
    if resolved.is_dir():
        resolved = resolved / "log.csv"
    return resolved, (label or None)


def default_label(path: Path) -> str:
    """``logs/jittor/log.csv`` -> ``jittor``; a file not named log.csv -> its stem."""
    return path.parent.name if path.name == "log.csv" and path.parent.name else path.stem


def read_log(path: str | Path, label: str | None = None) -> RunLog:
    """Read and check one log.csv; any problem is a one-line UsageError."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such log file (train.py / train_torch.py write OUT/log.csv)")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: not a readable CSV log ({str(err).splitlines()[0]})") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise UsageError(
            f"{path}: missing column(s) {', '.join(missing)} "
            f"(a training log has {', '.join(REQUIRED_COLUMNS)})"
        )
    if frame.empty:
        raise UsageError(f"{path}: the log has a header but no epochs yet")
    for column in frame.columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        if column in REQUIRED_COLUMNS and values.isna().any():
            row = int(values.isna().to_numpy().argmax()) + 2  # 1-based, after the header
            raise UsageError(f"{path}:{row}: column {column} is empty or not a number")
        frame[column] = values.astype("int64" if column == "epoch" else "float64")
    # A resumed run rewrites its log, but keep the last row per epoch in case one was appended.
    frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch", ignore_index=True)
    return RunLog(label or default_label(path), path, frame)


def load_runs(specs: Sequence[str]) -> list[RunLog]:
    """Read every ``PATH[:LABEL]``; repeated labels get a ``#2``, ``#3`` suffix."""
    runs: list[RunLog] = []
    seen: dict[str, int] = {}
    for spec in specs:
        path, label = parse_log_spec(spec)
        run = read_log(path, label)
        seen[run.label] = seen.get(run.label, 0) + 1
        if seen[run.label] > 1:
            run = RunLog(f"{run.label}#{seen[run.label]}", run.path, run.data)
        runs.append(run)
    return runs


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------


def summary_table(runs: Sequence[RunLog]) -> pd.DataFrame:
    """Final and best metrics per run, one row per run in the given order."""
    rows = []
    for run in runs:
        d = run.data
        last = d.iloc[-1]
        best1 = int(d["acc_top1"].idxmax())  # first epoch reaching the best value
        best5 = int(d["acc_top5"].idxmax())
        best_val = int(d["val_loss"].idxmin())
        rows.append(
            {
                "run": run.label,
                "epochs": run.epochs,
                "final train loss": float(last["train_loss"]),
                "final val loss": float(last["val_loss"]),
                "final top-1 %": float(last["acc_top1"]),
                "final top-5 %": float(last["acc_top5"]),
                "best top-1 %": float(d["acc_top1"][best1]),
                "best top-1 epoch": int(d["epoch"][best1]),
                "best top-5 %": float(d["acc_top5"][best5]),
                "min val loss": float(d["val_loss"][best_val]),
                "min val loss epoch": int(d["epoch"][best_val]),
                # The median ignores epoch 1's one-off costs (Jittor compiles its kernels there).
                "median epoch time s": float(d["epoch_time_s"].median()),
                "total time s": float(d["epoch_time_s"].sum()),
            }
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Gap:
    """Per-epoch differences between two runs over the epochs both logged."""

    first: str
    second: str
    table: pd.DataFrame  # one row per common epoch
    note: str  # empty when both runs cover the same epochs

    def max_abs(self, column: str) -> float:
        return float(self.table[column].abs().max()) if len(self.table) else math.nan


def gap_table(first: RunLog, second: RunLog) -> Gap:
    """|Δ| of the losses and Δ (second − first) of the accuracies, epoch by epoch."""
    a = first.data.set_index("epoch")
    b = second.data.set_index("epoch")
    common = a.index.intersection(b.index).sort_values()
    note = ""
    if not (a.index.equals(common) and b.index.equals(common)):
        span = f"epochs {common.min()}-{common.max()}" if len(common) else "no epochs"
        note = (
            f"The runs differ in length ({first.label}: {first.epochs} epochs, {second.label}: "
            f"{second.epochs} epochs); the gap is computed over the {len(common)} common "
            f"epochs only ({span})."
        )
    a, b = a.loc[common], b.loc[common]
    table = pd.DataFrame(
        {
            "epoch": common.astype(int),
            f"train loss {first.label}": a["train_loss"].to_numpy(),
            f"train loss {second.label}": b["train_loss"].to_numpy(),
            "|Δ train loss|": (b["train_loss"] - a["train_loss"]).abs().to_numpy(),
            f"val loss {first.label}": a["val_loss"].to_numpy(),
            f"val loss {second.label}": b["val_loss"].to_numpy(),
            "|Δ val loss|": (b["val_loss"] - a["val_loss"]).abs().to_numpy(),
            f"top-1 % {first.label}": a["acc_top1"].to_numpy(),
            f"top-1 % {second.label}": b["acc_top1"].to_numpy(),
            "Δ top-1 %": (b["acc_top1"] - a["acc_top1"]).to_numpy(),
            "Δ top-5 %": (b["acc_top5"] - a["acc_top5"]).to_numpy(),
        }
    )
    return Gap(first.label, second.label, table, note)


def _number_format(column: str) -> str:
    """Loss gaps in scientific notation (aligned runs differ by ~1e-6), accuracies in points
    with 2 decimals, times with 1, losses (and the rest) with 4."""
    if column.startswith("|Δ"):
        return ".2e"
    if "%" in column:
        return ".2f"
    return ".1f" if column.endswith(" s") else ".4f"


def _cell(value: object, spec: str = ".4f") -> str:
    if isinstance(value, bool | np.bool_):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        return "–" if math.isnan(v) else format(v, spec)
    return str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table; numbers right-aligned (formats: see _number_format)."""
    header = [_cell(c) for c in frame.columns]
    align = ["---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    specs = [_number_format(str(c)) for c in frame.columns]
    for row in frame.itertuples(index=False):
        cells = (_cell(v, spec) for v, spec in zip(row, specs, strict=True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_markdown(runs: Sequence[RunLog], figure: Path | None = None) -> str:
    """The Markdown written beside the figure: sources, final/best metrics, per-epoch gap."""
    parts = ["# Training metrics", ""]
    if figure is not None:
        parts += [f"Figure: `{figure}`", ""]
    parts += ["Runs (the first is primary):", ""]
    parts += [f"- **{r.label}**: `{r.path}` ({r.epochs} epochs)" for r in runs]
    parts += ["", "## Final and best metrics", "", markdown_table(summary_table(runs)), ""]
    parts += [
        "Best top-1 epoch / min val loss epoch: the first epoch reaching that value. The median "
        "epoch time is robust to epoch-1 one-off costs such as Jittor's kernel compilation; the "
        "total includes them.",
        "",
    ]
    if len(runs) >= 2:
        gap = gap_table(runs[0], runs[1])
        parts += [f"## Per-epoch gap: {gap.second} vs {gap.first}", ""]
        parts += [
            f"Δ = {gap.second} − {gap.first}. Over the compared epochs: max |Δ train loss| "
            f"{_cell(gap.max_abs('|Δ train loss|'), '.2e')}, max |Δ val loss| "
            f"{_cell(gap.max_abs('|Δ val loss|'), '.2e')}, max |Δ top-1| "
            f"{_cell(gap.max_abs('Δ top-1 %'), '.2f')} points, max |Δ top-5| "
            f"{_cell(gap.max_abs('Δ top-5 %'), '.2f')} points. (The logs hold 6 significant "
            "digits, so loss gaps below ~1e-5 read as 0.)",
            "",
        ]
        if gap.note:
            parts += [f"Note: {gap.note}", ""]
        parts += [markdown_table(gap.table), ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# figure
# ---------------------------------------------------------------------------------------------

# (title, y label, [(column, line style)]); main loss shows train solid and validation dashed.
PANELS = (
    ("Total train loss (main + w·aux)", "cross-entropy", [("train_loss", "-")]),
    (
        "Main-head loss: train (solid), val (dashed)",
        "cross-entropy",
        [("train_loss_main", "-"), ("val_loss", "--")],
    ),
    ("Auxiliary-head train loss", "cross-entropy", [("train_loss_aux", "-")]),
    ("Validation top-1 accuracy", "accuracy (%)", [("acc_top1", "-")]),
    ("Validation top-5 accuracy", "accuracy (%)", [("acc_top5", "-")]),
    ("Wall time per epoch", "seconds", [("epoch_time_s", "-")]),
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def plot_training(runs: Sequence[RunLog], title: str | None = None) -> Figure:
    """A 2x3 figure of the PANELS for every run; returns the matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    colours = plt.get_cmap("tab10").colors
    with plt.rc_context({"font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE + 1}):
        fig, axes = plt.subplots(2, 3, figsize=FIGSIZE, dpi=DPI, constrained_layout=True)
        for ax, (panel_title, ylabel, series) in zip(axes.flat, PANELS, strict=True):
            for i, run in enumerate(runs):
                style = _run_style(i, run.epochs, colours)
                for column, linestyle in series:
                    ax.plot(run.data["epoch"], run.data[column], linestyle=linestyle, **style)
            ax.set_title(panel_title)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        times = np.concatenate([r.data["epoch_time_s"].to_numpy() for r in runs])
        if times.min() > 0 and times.max() / times.min() > 20:  # e.g. a compile-heavy epoch 1
            axes.flat[-1].set_yscale("log")
            axes.flat[-1].set_title(PANELS[-1][0] + " (log scale)")
        handles = [
            Line2D([], [], **{**_run_style(i, 2, colours), "markevery": None})
            for i in range(len(runs))
        ]
        labels = [
            f"{r.label} ({r.epochs} ep.)" + (", primary" if i == 0 else "")
            for i, r in enumerate(runs)
        ]
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(runs), 4))
        fig.suptitle(title or "Training on TinyImageNet-N: " + " vs ".join(r.label for r in runs))
    return fig


def _run_style(index: int, epochs: int, colours: Sequence) -> dict:
    colour = colours[index % len(colours)]
    if index == 0:  # primary: wide and translucent, underneath
        return {"color": colour, "linewidth": 3.2, "alpha": 0.55, "zorder": 2}
    return {
        "color": colour,
        "linewidth": 1.4,
        "marker": MARKERS[(index - 1) % len(MARKERS)],
        "markersize": 4,
        "markevery": max(1, epochs // 25),
        "zorder": 3,
    }


# ---------------------------------------------------------------------------------------------
# command line (plot.py / plot_torch.py)
# ---------------------------------------------------------------------------------------------


def build_parser(primary: str, secondary: str, description: str) -> argparse.ArgumentParser:
    """The flags of plot.py / plot_torch.py; ``primary`` and ``secondary`` name the default runs."""
    parser = ArgumentParser(description=description, formatter_class=HelpFormatter)
    parser.add_argument(
        "--logs",
        nargs="+",
        metavar="PATH[:LABEL]",
        default=[f"logs/{primary}/log.csv", f"logs/{secondary}/log.csv"],
        help="training logs (log.csv or its folder), the first is primary; LABEL defaults to "
        "the log's folder name",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_FIGURE, help="figure (PNG)")
    parser.add_argument(
        "--table",
        type=Path,
        help="Markdown table of final/best metrics and the per-epoch gap "
        "(default: the figure's path with .md)",
    )
    parser.add_argument("--title", help="figure title (default: names the runs)")
    return parser


def run_cli(argv: Sequence[str] | None, primary: str, secondary: str, description: str) -> None:
    """What plot.py and plot_torch.py do; raises UsageError on bad input."""
    args = build_parser(primary, secondary, description).parse_args(argv)
    table_path = args.table or args.out.with_suffix(".md")
    if table_path.resolve() == args.out.resolve():
        raise UsageError(f"--table {table_path} is the figure's path; give another file")
    check_output(args.out, "--out")
    check_output(table_path, "--table")
    runs = load_runs(args.logs)
    report = report_markdown(runs, figure=args.out)
    figure = figure_png(plot_training(runs, args.title))
    write_together({args.out: figure, table_path: report.encode()})  # both or neither
    print(report)
    print(f"wrote {args.out} and {table_path}")
