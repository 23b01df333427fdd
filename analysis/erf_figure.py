"""The ERF figure: one panel per stage, the contribution map in decades below its peak, with
the centred squares holding 20/50/99 % of it outlined.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from analysis.erf_maps import DISPLAY_DECADES, ErfResult, centred_square, display_scale
from analysis.inputs import stage_name
from analysis.output import DPI, FONT_SIZE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SQUARES = ((0.2, ":"), (0.5, "--"), (0.99, "-"))  # outlines drawn on each panel


def erf_figure(result: ErfResult, title: str) -> Figure:
    """1 x S panels of the maps (display_scale) with the raw 20/50/99 % squares; a Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    scores = result.scores("raw")
    n = len(scores)
    with plt.rc_context({"font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE}):
        fig, axes = plt.subplots(1, n, figsize=(3.0 * n + 0.8, 4.3), dpi=DPI, layout="constrained")
        axes = np.atleast_1d(axes)
        for s, (ax, score) in enumerate(zip(axes, scores, strict=True)):
            image = ax.imshow(
                display_scale(score), cmap="inferno", vmin=-DISPLAY_DECADES, vmax=0,
                interpolation="nearest",
            )  # fmt: skip
            h, w = score.shape
            cy, cx = h // 2, w // 2
            lines = []
            for t, style in SQUARES:
                side, area = centred_square(score, t)
                if side:
                    r = side // 2
                    ax.add_patch(
                        Rectangle(
                            (cx - r - 0.5, cy - r - 0.5), side, side, fill=False,
                            edgecolor="cyan", linestyle=style, linewidth=1.3,
                        )
                    )  # fmt: skip
                    lines.append(f"{100 * area:.1f}%")
            fh, fw = result.feature_shapes[s]
            name = stage_name(s)
            ax.set_title(f"{name}, {fh}x{fw} map\narea holding 20/50/99%:\n" + " / ".join(lines))
            ax.set_xlabel("input x (px)")
            if s == 0:
                ax.set_ylabel("input y (px)")
        bar = fig.colorbar(image, ax=list(axes), shrink=0.8, pad=0.01)
        bar.set_label("log10(contribution / peak)")
        handles = [
            Line2D([], [], color="cyan", linestyle=style, label=f"centred square holding {t:.0%}")
            for t, style in SQUARES
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(SQUARES))
        fig.suptitle(title)
    return fig
