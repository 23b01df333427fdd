"""Grad-CAM: the framework-free part of gradcam.py / gradcam_torch.py.

Grad-CAM (Selvaraju et al., ICCV 2017): for a class score y_c and a stage output A (C x h x w),
the channel weights are the spatially averaged gradients ``a_k = mean_ij dy_c/dA_k[i, j]`` and the
map is ``ReLU(sum_k a_k A_k)`` (``grad_cam``). Each map is upsampled bilinearly to the input size
(``upsample``), divided by its own maximum for display (``normalise``) and overlaid on the image
(``overlay``). The class is the predicted one unless given (``pick_classes``). The framework
scripts only run the model and return the stage outputs and their gradients as numpy arrays.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from analysis.erf import (
    STAGE_NAMES,
    add_model_args,
    check_img_size,
    load_checkpoint,
    to_model_input,
    val_dataset,
)
from analysis.plotting import DPI, FONT_SIZE, make_parent, save_figure
from core.cli import HelpFormatter
from core.errors import UsageError
from core.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_IMAGES = tuple(range(8))
OVERLAY_ALPHA = 0.5  # weight of the heat map over the image
CMAP = "jet"


def pick_classes(logits: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """The given class per image, or the predicted one (argmax of the logits)."""
    if classes is None:
        return np.argmax(logits, axis=1).astype(np.int64)
    return np.broadcast_to(np.asarray(classes, dtype=np.int64), (len(logits),)).copy()


def one_hot(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """float32 N x K selector: the class score is (logits * one_hot).sum() per image."""
    out = np.zeros((len(classes), num_classes), dtype=np.float32)
    out[np.arange(len(classes)), classes] = 1.0
    return out


def grad_cam(activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """N x C x h x w activations and gradients -> N x h x w maps ``ReLU(sum_k a_k A_k)``."""
    weights = grads.astype(np.float64).mean(axis=(2, 3))  # a_k, N x C
    cam = np.einsum("nc,nchw->nhw", weights, activations.astype(np.float64))
    return np.maximum(cam, 0.0)


def upsample(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """N x h x w -> N x H x W, bilinear (Pillow, half-pixel centres)."""
    height, width = size
    return np.stack(
        [
            np.asarray(
                Image.fromarray(c.astype(np.float32), mode="F").resize(
                    (width, height), Image.Resampling.BILINEAR
                )
            )
            for c in cams
        ]
    ).astype(np.float64)


def normalise(cams: np.ndarray) -> np.ndarray:
    """Each map divided by its own maximum (an all-zero map stays zero)."""
    peak = cams.reshape(len(cams), -1).max(axis=1)
    return cams / np.where(peak > 0, peak, 1.0)[:, None, None]


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """uint8 H x W x 3 image and a [0, 1] H x W map -> float RGB in [0, 1], heat map on top."""
    import matplotlib

    heat = matplotlib.colormaps[CMAP](np.clip(cam, 0, 1))[..., :3]
    return (1 - alpha) * image.astype(np.float64) / 255.0 + alpha * heat


def peak_position(cam: np.ndarray) -> tuple[int, int]:
    """(row, column) of a map's maximum."""
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(row), int(col)


@dataclass
class CamResult:
    """Grad-CAMs of some images: cams[s] is stage s's N x H x W map at input size, in [0, 1]."""

    indices: list[int]
    images: np.ndarray  # N x H x W x 3 uint8
    labels: np.ndarray  # true classes
    classes: np.ndarray  # explained classes (predicted unless --class)
    probs: np.ndarray  # N x K softmax of the logits
    predicted: np.ndarray
    cams: np.ndarray  # S x N x H x W
    raw: list[np.ndarray]  # per stage N x h x w, before upsampling and normalisation


class CamBackend(Protocol):
    """What gradcam.py / gradcam_torch.py supply: the framework calls, nothing else."""

    name: str

    def load(self, state: Mapping[str, np.ndarray], model_name: str, num_classes: int) -> None: ...

    def activations_and_grads(
        self, images: np.ndarray, classes: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """(logits, explained classes, stage outputs, d score / d stage output)."""
        ...


def compute_cams(
    backend: CamBackend, images: np.ndarray, classes: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Run the backend on uint8 N x H x W x 3 images; (logits, classes, S x N x H x W, raw)."""
    logits, chosen, acts, grads = backend.activations_and_grads(to_model_input(images), classes)
    raw = [grad_cam(a, g) for a, g in zip(acts, grads, strict=True)]
    size = images.shape[1:3]
    cams = np.stack([normalise(upsample(r, size)) for r in raw])
    return logits, chosen, cams, raw


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so large logits do not overflow."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def short_name(name: str, limit: int = 22) -> str:
    """First synonym of a words.txt entry, cut to ``limit`` characters."""
    name = name.split(",")[0].strip()
    return name if len(name) <= limit else name[: limit - 1] + "…"


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
            name = STAGE_NAMES[s] if s < len(STAGE_NAMES) else f"map {s + 1}"
            axes[0, s + 1].set_title(f"{name}\n{h}x{w} map")
        bar = fig.colorbar(
            ScalarMappable(Normalize(0, 1), CMAP), ax=axes, shrink=0.4, pad=0.01, aspect=30
        )
        bar.set_label("Grad-CAM / its maximum")
        fig.suptitle(f"{title}\nexplained class: {explained}")
    return fig


def parse_class(value: str | None, class_names: Sequence[str], wnids: Sequence[str]) -> int | None:
    """--class as an index, a wnid or a class name; None: the predicted class."""
    if value is None:
        return None
    if value.lstrip("-").isdigit():
        index = int(value)
        if not 0 <= index < len(class_names):
            raise UsageError(f"--class {index}: use 0..{len(class_names) - 1}")
        return index
    for names in (wnids, class_names, [short_name(c, 10**6) for c in class_names]):
        if value in names:
            return list(names).index(value)
    raise UsageError(f"--class {value!r}: not an index, wnid or class name of this dataset")


def run_gradcam(
    argv: Sequence[str] | None,
    framework: str,
    suffix: str,
    description: str,
    make_backend: Callable[[str], CamBackend],
) -> CamResult:
    """What gradcam.py and gradcam_torch.py do; raises UsageError (and data/checkpoint errors)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    add_model_args(parser, framework, suffix)
    parser.add_argument(
        "--images",
        type=int,
        nargs="+",
        default=list(DEFAULT_IMAGES),
        metavar="INDEX",
        help="validation image indices (the validation order of training)",
    )
    parser.add_argument(
        "--class",
        dest="target_class",
        metavar="CLASS",
        help="explain this class (index, wnid or name) instead of each image's prediction",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("visualization") / f"gradcam_{framework}.png",
        help="figure; the maps at stage resolution go to the same path with .npz",
    )
    args = parser.parse_args(argv)
    check_img_size(args.img_size)
    state, model_name, num_classes = load_checkpoint(args.checkpoint)
    if args.num_classes not in (None, num_classes):
        raise UsageError(
            f"--num-classes {args.num_classes}: the checkpoint classifies {num_classes} classes"
        )
    dataset = val_dataset(args.data, num_classes, args.img_size)
    bad = [i for i in args.images if not 0 <= i < len(dataset)]
    if bad:
        raise UsageError(f"--images {bad}: the validation split has indices 0..{len(dataset) - 1}")
    target = parse_class(args.target_class, dataset.class_names, dataset.wnids)
    make_parent(args.out)

    backend = make_backend(args.device)
    backend.load(state, model_name, num_classes)
    start = time.perf_counter()
    images = np.stack([dataset.load(i) for i in args.images])
    classes = None if target is None else np.full(len(images), target)
    logits, chosen, cams, raw = compute_cams(backend, images, classes)
    result = CamResult(
        indices=list(args.images),
        images=images,
        labels=dataset.labels[args.images],
        classes=chosen,
        probs=softmax(logits.astype(np.float64)),
        predicted=np.argmax(logits, axis=1),
        cams=cams,
        raw=raw,
    )
    explained = "predicted" if target is None else f"{target} ({dataset.class_names[target]})"
    title = f"Grad-CAM, {backend.name}: {args.checkpoint.name} ({model_name})"
    save_figure(gradcam_figure(result, dataset.class_names, title, explained), args.out)
    npz = io.BytesIO()
    np.savez(
        npz,
        indices=np.array(result.indices),
        labels=result.labels,
        classes=result.classes,
        logits=logits,
        **{f"stage{s + 1}": r for s, r in enumerate(raw)},
    )
    atomic_write(args.out.with_suffix(".npz"), lambda handle: handle.write(npz.getvalue()))
    names = dataset.class_names
    for r, index in enumerate(result.indices):
        peaks = ", ".join(f"{peak_position(result.cams[s, r])}" for s in range(len(cams)))
        explained = result.classes[r]
        print(
            f"image {index}: true {names[result.labels[r]]}, predicted "
            f"{names[result.predicted[r]]}; explaining {names[explained]} "
            f"(p={result.probs[r, explained]:.3f}); peaks (row, col) per stage: {peaks}"
        )
    print(
        f"wrote {args.out} and {args.out.with_suffix('.npz')} ({time.perf_counter() - start:.1f}s)"
    )
    return result
