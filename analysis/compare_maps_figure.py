"""Side-by-side figures of two frameworks' maps of one checkpoint pair: ERF and Grad-CAM, a row
per framework and a row of their difference. Framework-free: the maps come as numpy
(``analysis.compare_maps`` computes them through each backend).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from analysis.erf_maps import DISPLAY_DECADES, ErfResult, centred_square, display_scale
from analysis.gradcam_maps import CMAP, overlay, short_name
from analysis.inputs import stage_name
from analysis.output import DPI, FONT_SIZE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DIFF_CMAP = "RdBu_r"
ERF_DIFF_DECADES = 1.0  # the difference row's colour range: the largest |Δ|, at most ±1 decade
CELL = 1.8  # inches per Grad-CAM panel


def _areas(score: np.ndarray) -> str:
    return " / ".join(f"{100 * centred_square(score, t)[1]:.1f}%" for t in (0.2, 0.5, 0.99))


def erf_comparison_figure(results: Mapping[str, ErfResult], title: str) -> Figure:
    """Rows: each framework's ERF (decades below its peak) and the first minus the second
    (decades; colours span the largest difference, at most ERF_DIFF_DECADES); columns: the
    stages. ``results``: framework name -> ERF, two of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (name_a, a), (name_b, b) = results.items()
    shown = {name_a: display_scale_all(a), name_b: display_scale_all(b)}
    stages = len(a.maps)
    with plt.rc_context({"font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE}):
        fig, axes = plt.subplots(
            3,
            stages,
            figsize=(3.0 * stages + 1.2, 9.6),
            dpi=DPI,
            layout="constrained",
            squeeze=False,
        )
        for row, (name, result) in enumerate(results.items()):
            for s in range(stages):
                image = axes[row, s].imshow(
                    shown[name][s], cmap="inferno", vmin=-DISPLAY_DECADES, vmax=0
                )
                axes[row, s].set_title(
                    f"{name}: {stage_name(s)}\n20/50/99% in {_areas(result.maps[s])}"
                )
            fig.colorbar(image, ax=list(axes[row]), shrink=0.8, label="log10(contribution / peak)")
        span = diff_span(shown[name_a], shown[name_b], ERF_DIFF_DECADES)
        for s in range(stages):
            diff = shown[name_a][s] - shown[name_b][s]
            image = axes[2, s].imshow(diff, cmap=DIFF_CMAP, vmin=-span, vmax=span)
            axes[2, s].set_title(f"{name_a} − {name_b}\nmax |Δ| {np.abs(diff).max():.2g} decades")
        fig.colorbar(image, ax=list(axes[2]), shrink=0.8, label="Δ log10 (decades)")
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(title)
    return fig


def display_scale_all(result: ErfResult) -> np.ndarray:
    """Every stage's map on the display scale (decades below its peak, clipped)."""
    return np.stack([display_scale(m) for m in result.maps])


def _image_rows(
    axes: np.ndarray,
    row: int,
    image: np.ndarray,
    cams: Mapping[str, np.ndarray],
    r: int,
    span: float,
) -> None:
    """One image's rows: each framework's overlays, then their difference (colours +-span)."""
    (name_a, a), (name_b, b) = cams.items()
    for k, (name, cam) in enumerate(cams.items()):
        axes[row + k, 0].imshow(image, interpolation="bilinear")
        for s in range(cam.shape[0]):
            axes[row + k, s + 1].imshow(overlay(image, cam[s, r]), interpolation="bilinear")
        axes[row + k, 0].set_ylabel(name)
    axes[row + 2, 0].axis("off")
    axes[row + 2, 0].text(0.5, 0.5, f"{name_a}\n− {name_b}", ha="center", va="center")
    for s in range(a.shape[0]):
        diff = a[s, r] - b[s, r]
        axes[row + 2, s + 1].imshow(diff, cmap=DIFF_CMAP, vmin=-span, vmax=span)
        axes[row + 2, s + 1].set_xlabel(f"max |Δ| {np.abs(diff).max():.2g}")


def diff_span(a: np.ndarray, b: np.ndarray, most: float) -> float:
    """The difference rows' colour range: the largest |a - b|, at most ``most`` (and > 0)."""
    return float(min(max(np.abs(a - b).max(), 1e-12), most))


def gradcam_comparison_figure(
    images: np.ndarray,
    cams: Mapping[str, np.ndarray],
    predicted: Mapping[str, np.ndarray],
    labels: Sequence[int],
    class_names: Sequence[str],
    indices: Sequence[int],
    title: str,
) -> Figure:
    """Per image three rows (each framework's overlays, their difference); columns: the input and
    the stages. ``cams``: framework -> S x N x H x W maps in [0, 1] (each scaled to its peak);
    ``predicted``: framework -> N predicted classes; the true class is the one explained;
    ``indices``: the images' validation indices. The difference rows' colours span the largest
    difference (at most 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    stages, n = next(iter(cams.values())).shape[:2]
    cols = stages + 1
    with plt.rc_context({"font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE}):
        fig, axes = plt.subplots(
            3 * n, cols, figsize=(CELL * cols + 1.8, CELL * 3 * n + 1.0), dpi=DPI,
            layout="constrained", squeeze=False,
        )  # fmt: skip
        span = diff_span(*cams.values(), 1.0)
        for r in range(n):
            _image_rows(axes, 3 * r, images[r], cams, r, span)
            true = short_name(class_names[labels[r]], 16)
            axes[3 * r, 0].set_title(f"#{indices[r]} true: {true}")
            for k, p in enumerate(predicted.values()):
                axes[3 * r + k, 0].set_xlabel(f"pred: {short_name(class_names[p[r]], 18)}")
        for s in range(stages):
            axes[0, s + 1].set_title(stage_name(s))
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(ScalarMappable(Normalize(0, 1), CMAP), ax=axes, shrink=0.3, pad=0.01,
                     label="Grad-CAM / its maximum")  # fmt: skip
        fig.colorbar(ScalarMappable(Normalize(-span, span), DIFF_CMAP), ax=axes, shrink=0.3,
                     pad=0.01, label="difference of the scaled maps")  # fmt: skip
        fig.suptitle(title)
    return fig
