"""The alignment study's figure (report.png): top row, per metric, the mean ± std band of each
framework over the seeds; bottom row, the per-epoch |Δ| between the frameworks for the same seed
next to the |Δ| between seed 0 and its ulp control and the spread between seeds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from analysis.compare_data import FRAMEWORKS, GAPS, METRICS, StudyData, band, gaps, per_seed_gaps
from analysis.output import DPI, FONT_SIZE

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# The gap panels' symmetric-log scale: linear below the logs' resolution (6 significant digits
# of a loss near 1; 0.1 point, one image in 1,000), logarithmic above, so both the first
# epochs' round-off and the late gaps show.
LINEAR_BELOW = {"train_loss": 1e-5, "val_loss": 1e-5, "acc_top1": 0.1, "acc_top5": 0.1}
COLOURS = {"torch": "tab:blue", "jittor": "tab:orange"}
GAP_STYLES = {
    "frameworks": {"color": "tab:red", "linestyle": "-", "marker": "o"},
    "ulp": {"color": "tab:gray", "linestyle": "--", "marker": "s"},
    "seeds": {"color": "tab:green", "linestyle": ":", "marker": "^"},
}


def _bands(ax: Axes, data: StudyData, metric: str, epochs: np.ndarray) -> None:
    for role, name in FRAMEWORKS.items():
        mean, std, n = band(data, role, metric)
        if not np.any(n):
            continue
        most = int(n.max())
        ax.plot(epochs, mean, color=COLOURS[role], label=f"{name} (n={most})", marker=".")
        if most >= 2:
            ax.fill_between(epochs, mean - std, mean + std, color=COLOURS[role], alpha=0.2)
    ax.set_title(f"{METRICS[metric]}: mean ± std over seeds")
    ax.set_xlabel("epoch")


def _gaps(ax: Axes, data: StudyData, metric: str, epochs: np.ndarray) -> None:
    for seed_gap in per_seed_gaps(data, metric):  # the points behind the mean
        ax.plot(epochs, seed_gap, color="tab:red", alpha=0.3, linestyle="none", marker=".")
    for kind, values in gaps(data, metric).items():
        if np.any(~np.isnan(values)):
            ax.plot(epochs, values, label=GAPS[kind], **GAP_STYLES[kind])
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("symlog", linthresh=LINEAR_BELOW[metric])
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # no mathtext
    ax.set_title(f"|Δ| {METRICS[metric]} (linear below {LINEAR_BELOW[metric]:g})")
    ax.set_xlabel("epoch")


def study_figure(data: StudyData) -> Figure:
    """2 x 4 panels (train loss, val loss, top-1, top-5); a Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, data.epochs + 1)
    with plt.rc_context({"font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE}):
        fig, axes = plt.subplots(2, len(METRICS), figsize=(16, 7.5), dpi=DPI, layout="constrained")
        from matplotlib.ticker import MaxNLocator

        for col, metric in enumerate(METRICS):
            _bands(axes[0, col], data, metric, epochs)
            _gaps(axes[1, col], data, metric, epochs)
        for ax in axes.flat:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for row in axes:
            handles, labels = row[0].get_legend_handles_labels()
            if handles:
                row[0].legend(handles, labels, loc="best")
        axes[1, 0].set_ylabel("|Δ| (red points: each seed)")
        name = data.model or "OverLoCK"
        fig.suptitle(
            f"Alignment study: {name}, {data.settings.seeds} seed(s), {data.epochs} epoch(s); "
            "Jittor vs PyTorch from the same init and batches"
        )
    return fig
