"""Effective receptive field (ERF): the contribution maps and their area ratios, framework-free.

Method (Luo et al., NeurIPS 2016, "Understanding the Effective Receptive Field in Deep CNNs"; the
measure follows RepLKNet, Ding et al., CVPR 2022, erf/analyze_erf.py):

- for each stage output F (B x C x h x w) take the centre unit of its channel mean,
  ``y = mean_c F[:, c, h // 2, w // 2]`` (``backends.base.centre_unit``), and the gradient of y
  with respect to the input image, with the model in eval mode (BatchNorm uses its running
  statistics, so images are independent and one backward pass over a batch gives each image's
  own gradient; ``Backend.stage_input_grads`` computes it);
- contribution map = |gradient|, summed over the 3 input channels and the N images (``accumulate``);
- high-contribution area ratio at t in 20/30/50/99 %: the smallest square centred on the centre
  unit's input position whose sum holds at least t of the map's total, as a fraction of the input
  area (``centred_square``), on the map itself ("raw") and, as RepLKNet's analyze_erf measures
  it, on ``log10(1 + map / N)`` (the log of the per-image mean). With a channel-mean target the
  per-image gradients are small (~1e-3 here), where log10(1 + x) ~ x / ln 10 and both agree;
- display (``display_scale``): ``log10(map / max)`` clipped at -3, i.e. decades below the peak.
  RepLKNet's log10(1 + x) would be linear at these magnitudes and show only the core; this scale
  does not depend on the gradients' absolute size, so checkpoints compare by eye.

Differences from RepLKNet's script, on purpose: |gradient| instead of ReLU(gradient), the
channel mean of the centre unit instead of the sum of its ReLU, a square counts when it holds
>= t (RepLKNet: > t), and square sides run from 1 px (RepLKNet: 3) up to the whole image,
clipped at the border (RepLKNet stops short of it and then finds no square).

The stride-2, padding-1 convolutions of OverLoCK map the centre unit (h // 2, w // 2) of every
stage to input pixel (H // 2, W // 2) when H is a multiple of 32, so all squares share that centre.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.inputs import stage_name
from core.errors import UsageError

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
SCALES = ("log", "raw")  # log10(1 + mean) as RepLKNet, and the contribution map itself
DISPLAY_DECADES = 3
# One call of Backend.stage_input_grads: (grads per stage, (h, w) per stage).
StageInputGrads = Callable[[np.ndarray], tuple[Sequence[np.ndarray], Sequence[tuple[int, int]]]]


def accumulate(grads: np.ndarray) -> np.ndarray:
    """|input gradients| (N x C x H x W) summed over images and channels -> H x W (float64)."""
    grads = np.asarray(grads)
    if grads.ndim != 4:
        raise ValueError(f"expected N x C x H x W gradients, got shape {grads.shape}")
    return np.abs(grads.astype(np.float64)).sum(axis=(0, 1))


def log_scale(contrib: np.ndarray, num_images: int) -> np.ndarray:
    """RepLKNet's scale: ``log10(1 + contrib / N)`` divided by its maximum (zero stays zero)."""
    scaled = np.log10(1.0 + np.asarray(contrib, dtype=np.float64) / max(num_images, 1))
    peak = scaled.max()
    return scaled / peak if peak > 0 else scaled


def display_scale(contrib: np.ndarray) -> np.ndarray:
    """``log10(contrib / max)`` clipped to [-DISPLAY_DECADES, 0] (the figure's colours)."""
    contrib = np.asarray(contrib, dtype=np.float64)
    peak = contrib.max()
    if not peak > 0:
        return np.full(contrib.shape, -float(DISPLAY_DECADES))
    with np.errstate(divide="ignore"):
        return np.maximum(np.log10(contrib / peak), -DISPLAY_DECADES)


def centred_square(
    scores: np.ndarray, fraction: float, centre: tuple[int, int] | None = None
) -> tuple[int, float]:
    """Smallest square (odd side s = 2i + 1) centred on ``centre`` holding >= ``fraction`` of the
    total, clipped at the border. Returns (s, covered area / map area); (0, nan) for an all-zero
    map. ``centre`` defaults to (H // 2, W // 2).
    """
    scores = np.asarray(scores, dtype=np.float64)
    h, w = scores.shape
    cy, cx = centre if centre is not None else (h // 2, w // 2)
    total = scores.sum()
    if not total > 0:
        return 0, math.nan
    # Summed-area table: each square's sum in O(1).
    table = np.zeros((h + 1, w + 1))
    table[1:, 1:] = scores.cumsum(0).cumsum(1)
    for i in range(max(h, w) + 1):
        top, bottom = max(cy - i, 0), min(cy + i + 1, h)
        left, right = max(cx - i, 0), min(cx + i + 1, w)
        inside = table[bottom, right] - table[top, right] - table[bottom, left] + table[top, left]
        # Relative slack: a uniform map's exact fractions must not miss by a rounding error.
        if inside >= fraction * total * (1 - 1e-12):
            return 2 * i + 1, (bottom - top) * (right - left) / (h * w)
    raise AssertionError("unreachable: the last square covers the whole map")


@dataclass
class ErfResult:
    """Contribution maps of one model: maps[s] is stage s's sum of |gradient| over N images."""

    maps: np.ndarray  # S x H x W float64
    num_images: int
    feature_shapes: list[tuple[int, int]]  # (h, w) of each stage output

    def scores(self, scale: str) -> np.ndarray:
        """S x H x W maps on a scale of SCALES (log: RepLKNet's log10(1 + mean) / max)."""
        if scale == "log":
            return np.stack([log_scale(m, self.num_images) for m in self.maps])
        if scale == "raw":
            return self.maps
        raise ValueError(f"unknown scale {scale!r}; use one of {SCALES}")

    def area_rows(self) -> list[dict[str, Any]]:
        """RepLKNet's high-contribution area ratio per stage and scale (the CSV's rows)."""
        rows = []
        for scale in SCALES:
            for s, score in enumerate(self.scores(scale)):
                h, w = self.feature_shapes[s]
                row: dict[str, Any] = {
                    "stage": s + 1,
                    "name": stage_name(s),
                    "feature_map": f"{h}x{w}",
                    "input": f"{score.shape[0]}x{score.shape[1]}",
                    "images": self.num_images,
                    "scale": "log10(1+mean)" if scale == "log" else "raw",
                }
                for t in THRESHOLDS:
                    side, area = centred_square(score, t)
                    row[f"side_t{round(100 * t)}"] = side
                    row[f"area_t{round(100 * t)}"] = area
                rows.append(row)
        return rows


def compute_erf(
    stage_input_grads: StageInputGrads,
    batches: Sequence[np.ndarray],
    progress: Callable[[int, int], None] | None = None,
) -> ErfResult:
    """Sum |gradient| over every batch. ``stage_input_grads(images)`` gives one N x 3 x H x W
    gradient per stage and the stages' (h, w) (``Backend.stage_input_grads``, the framework part).
    """
    maps: np.ndarray | None = None
    shapes: Sequence[tuple[int, int]] = ()
    count = 0
    for b, images in enumerate(batches):
        grads, shapes = stage_input_grads(images)
        summed = np.stack([accumulate(g) for g in grads])
        maps = summed if maps is None else maps + summed
        count += len(images)
        if progress is not None:
            progress(b + 1, len(batches))
    if maps is None:
        raise UsageError("no images to compute the ERF on")
    return ErfResult(maps, count, [(int(h), int(w)) for h, w in shapes])


def csv_bytes(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The rows as CSV (floats with 6 significant digits)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue().encode()


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of the area ratios for the terminal."""
    head = f"{'stage':<22}{'map':>7}  {'scale':<14}" + "".join(
        f"{f'{round(100 * t)}%':>16}" for t in THRESHOLDS
    )
    lines = [head, " " * 45 + "(square side px, area fraction of the input)"]
    for row in rows:
        cells = "".join(
            f"{row[f'side_t{round(100 * t)}']:>6} ({row[f'area_t{round(100 * t)}']:6.1%})"
            for t in THRESHOLDS
        )
        lines.append(f"{row['name']:<22}{row['feature_map']:>7}  {row['scale']:<14}{cells}")
    return "\n".join(lines)
