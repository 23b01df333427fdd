"""Effective receptive field (ERF): the framework-free part of erf.py / erf_torch.py.

Method (Luo et al., NeurIPS 2016, "Understanding the Effective Receptive Field in Deep CNNs"; the
measure follows RepLKNet, Ding et al., CVPR 2022, erf/analyze_erf.py):

- for each stage output F (B x C x h x w) take the centre unit of its channel mean,
  ``y = mean_c F[:, c, h // 2, w // 2]``, and the gradient of y with respect to the input image,
  with the model in eval mode (BatchNorm uses its running statistics, so images are independent
  and one backward pass over a batch gives each image's own gradient);
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

import argparse
import csv
import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from analysis.plotting import DPI, FONT_SIZE, make_parent, save_figure
from core.cli import HelpFormatter
from core.errors import UsageError
from core.files import atomic_write, atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from data import TinyImageNet

# The module whose last block ends each stage, as named in both OverLoCK twins.
STAGE_MODULES = ("blocks1", "blocks2", "sub_blocks3", "sub_blocks4")
STAGE_NAMES = (
    "Stage 1 (Base-Net)",
    "Stage 2 (Base-Net)",
    "Stage 3 (Focus-Net)",
    "Stage 4 (Focus-Net)",
)
THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
SCALES = ("log", "raw")  # log10(1 + mean) as RepLKNet, and the contribution map itself
DEFAULT_NUM_IMAGES = 200


def centre_unit(shape: Sequence[int]) -> tuple[int, int]:
    """Index of the centre unit of an (..., h, w) map: (h // 2, w // 2)."""
    h, w = shape[-2:]
    return h // 2, w // 2


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


DISPLAY_DECADES = 3


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
                    "name": STAGE_NAMES[s] if s < len(STAGE_NAMES) else f"map {s + 1}",
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
    input_grads: Callable[[np.ndarray], Sequence[np.ndarray]],
    batches: Sequence[np.ndarray],
    feature_shapes: Callable[[], list[tuple[int, int]]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ErfResult:
    """Sum |gradient| over every batch. ``input_grads(images)`` gives one N x 3 x H x W gradient
    per stage (the framework part); ``feature_shapes()`` the stage output sizes it saw last.
    """
    maps: np.ndarray | None = None
    count = 0
    for b, images in enumerate(batches):
        grads = input_grads(images)
        summed = np.stack([accumulate(g) for g in grads])
        maps = summed if maps is None else maps + summed
        count += len(images)
        if progress is not None:
            progress(b + 1, len(batches))
    if maps is None:
        raise UsageError("no images to compute the ERF on")
    shapes = feature_shapes() if feature_shapes is not None else [m.shape for m in maps]
    return ErfResult(maps, count, [tuple(map(int, s)) for s in shapes])


# ---------------------------------------------------------------------------------------------
# figure and files
# ---------------------------------------------------------------------------------------------

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
            name = STAGE_NAMES[s] if s < len(STAGE_NAMES) else f"map {s + 1}"
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


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """The rows as CSV (floats with 6 significant digits), written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_bytes(path, buffer.getvalue().encode())


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


# ---------------------------------------------------------------------------------------------
# inputs shared with Grad-CAM: checkpoint, validation images, common flags
# ---------------------------------------------------------------------------------------------


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], str, int]:
    """Weights of a .pth or .pkl checkpoint of either framework, their variant and classes."""
    from models.weights import check_state, load_state_dict

    if not Path(path).is_file():
        raise UsageError(f"--checkpoint {path}: no such file (train.py / train_torch.py write one)")
    state = load_state_dict(path)
    model_name, num_classes = check_state(state)
    return state, model_name, num_classes


def check_img_size(img_size: int) -> None:
    """A multiple of 32, so every stage's centre unit maps to the input's centre pixel."""
    if img_size < 32 or img_size % 32:
        raise UsageError(
            f"--img-size {img_size}: OverLoCK downsamples by 32, use a multiple of 32 (e.g. 64)"
        )


def val_dataset(data: Path | None, num_classes: int, img_size: int) -> TinyImageNet:
    """The validation split the training scripts evaluate on (same class selection and order)."""
    from data import TinyImageNet, resolve_data_dir

    return TinyImageNet(resolve_data_dir(data), "val", num_classes, None, img_size)


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 N x H x W x 3 -> normalised float32 N x 3 x H x W, exactly as in training."""
    from data import normalize

    return normalize(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def add_model_args(parser: argparse.ArgumentParser, framework: str, suffix: str) -> None:
    """--checkpoint, --data, --num-classes, --img-size, --device (ERF and Grad-CAM alike)."""
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=Path("logs") / framework / f"checkpoint_best{suffix}",
        help="weights to analyse: .pth or .pkl of either framework (converted on the fly)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="TinyImageNet-layout folder; default: the generated dataset training uses",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        help="classes of the dataset to read (default: the checkpoint's classifier width)",
    )
    parser.add_argument(
        "--img-size", type=int, default=64, help="input side in px (a multiple of 32)"
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the model runs (auto: CUDA when available)",
    )


class ErfBackend(Protocol):
    """What erf.py / erf_torch.py supply: the framework calls, nothing else."""

    name: str

    def load(self, state: Mapping[str, np.ndarray], model_name: str, num_classes: int) -> None: ...

    def stage_input_grads(self, images: np.ndarray) -> list[np.ndarray]: ...

    def feature_shapes(self) -> list[tuple[int, int]]: ...


def run_erf(
    argv: Sequence[str] | None,
    framework: str,
    suffix: str,
    description: str,
    make_backend: Callable[[str], ErfBackend],
) -> ErfResult:
    """What erf.py and erf_torch.py do; raises UsageError (and data/checkpoint errors)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    add_model_args(parser, framework, suffix)
    parser.add_argument(
        "--num-images",
        type=int,
        default=DEFAULT_NUM_IMAGES,
        help="first N validation images (all if fewer)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=25, help="images per forward/backward pass"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("visualization") / f"erf_{framework}.png",
        help="figure; the area ratios go to the same path with .csv, the maps to .npz",
    )
    args = parser.parse_args(argv)
    check_img_size(args.img_size)
    if args.num_images < 1 or args.batch_size < 1:
        raise UsageError("--num-images and --batch-size must be at least 1")
    state, model_name, num_classes = load_checkpoint(args.checkpoint)
    dataset = val_dataset(args.data, args.num_classes or num_classes, args.img_size)
    count = min(args.num_images, len(dataset))
    if count < args.num_images:
        print(f"note: {dataset.root} has {len(dataset)} validation images; using all of them")
    make_parent(args.out)

    backend = make_backend(args.device)
    backend.load(state, model_name, num_classes)
    start = time.perf_counter()

    def batch(first: int) -> np.ndarray:
        indices = range(first, min(first + args.batch_size, count))
        return to_model_input(np.stack([dataset.load(i) for i in indices]))

    batches = [batch(first) for first in range(0, count, args.batch_size)]

    def progress(done: int, total: int) -> None:
        print(f"\r{backend.name}: batch {done}/{total}", end="\n" if done == total else "")

    result = compute_erf(backend.stage_input_grads, batches, backend.feature_shapes, progress)
    rows = result.area_rows()
    title = (
        f"Effective receptive field, {backend.name}: {args.checkpoint.name} ({model_name}), "
        f"{result.num_images} validation images at {args.img_size}x{args.img_size}"
    )
    save_figure(erf_figure(result, title), args.out)
    write_csv(rows, args.out.with_suffix(".csv"))
    npz = io.BytesIO()
    np.savez(
        npz,
        maps=result.maps,
        num_images=result.num_images,
        feature_shapes=np.array(result.feature_shapes),
        stage_names=np.array(STAGE_NAMES),
    )
    atomic_write(args.out.with_suffix(".npz"), lambda handle: handle.write(npz.getvalue()))
    print(format_rows(rows))
    print(
        f"wrote {args.out}, {args.out.with_suffix('.csv')}, {args.out.with_suffix('.npz')} "
        f"({time.perf_counter() - start:.1f}s)"
    )
    return result
