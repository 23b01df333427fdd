"""The Grad-CAM figure: one row per image (its true and predicted class under it), the input
and one overlay per stage, each map scaled to its own maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from analysis.gradcam_maps import CMAP, CamResult, overlay, short_name
from analysis.inputs import stage_name
from analysis.output import DPI, FONT_SIZE

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def gradcam_figure(
    result: CamResult, class_names: Sequence[str], title: str, explained: str
) -> Figure:
    """Rows: images; columns: input + one overlay per stage. Returns the Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    n_stages, n_images = result.cams.shape[:2]
    cols = n_stages + 1
    with plt.rc_context({"font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE}):
        fig, axes = plt.subplots(
            n_images, cols, figsize=(2.0 * cols + 1.6, 2.0 * n_images + 1.0), dpi=DPI,
            layout="constrained", squeeze=False,
        )  # fmt: skip
        for r in range(n_images):
            image = result.images[r]
            truth, pred = result.labels[r], result.predicted[r]
            ok = truth == pred
            axes[r, 0].imshow(image, interpolation="bilinear")
            label = (
                f"#{result.indices[r]} true: {short_name(class_names[truth])}\n"
                f"pred: {short_name(class_names[pred])} (p={result.probs[r, pred]:.2f})"
            )  # under the image, green when correct
            axes[r, 0].set_xlabel(label, color="darkgreen" if ok else "firebrick")
            for s in range(n_stages):
                ax = axes[r, s + 1]
                ax.imshow(overlay(image, result.cams[s, r]), interpolation="bilinear")
                if not result.raw[s][r].max() > 0:  # ReLU removed everything: say so
                    ax.text(
                        0.5, 0.06, "CAM ≤ 0 everywhere", transform=ax.transAxes,
                        ha="center", va="bottom", color="white", fontsize=FONT_SIZE - 1,
                    )  # fmt: skip
            for ax in axes[r]:
                ax.set_xticks([])
                ax.set_yticks([])
        axes[0, 0].set_title("input")
        for s in range(n_stages):
            h, w = result.raw[s].shape[1:]
            name = stage_name(s)
            axes[0, s + 1].set_title(f"{name}\n{h}x{w} map")
        bar = fig.colorbar(
            ScalarMappable(Normalize(0, 1), CMAP), ax=axes, shrink=0.4, pad=0.01, aspect=30
        )
        bar.set_label("Grad-CAM / its maximum")
        fig.suptitle(f"{title}\nexplained class: {explained}")
    return fig
