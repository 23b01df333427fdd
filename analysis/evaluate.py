"""Top-1 / top-5 accuracy and loss of a checkpoint: the framework-free part of evaluate.py (Jittor)
and evaluate_torch.py (PyTorch), so the two scripts differ only in the framework calls.

    python evaluate_torch.py --checkpoint overlock_t_in1k_224.pth --data /path/to/imagenet
    python evaluate.py --checkpoint logs/jittor/checkpoint_best.pkl --data DIR --img-size 64

Checkpoint: .pth or .pkl of either framework, read by ``models.weights`` (a bare state dict, one
wrapped in 'state_dict' / 'model', e.g. the official release files, or a training checkpoint of
train.py / train_torch.py). The variant comes from --model, else from the training checkpoint's
``model_name``, else it is recognised from the keys and shapes; a deploy-form file (``*_reparam``)
is recognised as such. The classifier width is read from ``head.4.weight``.

Data (``data.open_dataset``): an ImageNet-layout root (``val/<class>/*.JPEG``) with the
official evaluation transform (bicubic resize of the shorter side to ``floor(img_size /
crop_pct)``, centre crop; ``crop_pct`` per variant from ``models.variants``), or a
TinyImageNet-layout folder (resized to a square, as in training). ImageNet mean/std
normalisation in both cases.

Class rule: class folders (wnids) are sorted and class i is scored as head output i. The first N
folders are evaluated, N = --num-classes (default: the head's width; at most that): the training
scripts' selection, and ImageNet-1k's standard index order for the official checkpoints. Data with
fewer than N class folders is refused. Top-k and the loss use all head outputs.

Metrics: top-k = share of images whose label is among the k highest logits (ties: lower index
first); loss = mean cross entropy of the logits (float64), as the training scripts' validation.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.checkpoints import Weights, load_weights
from analysis.output import check_output
from backends.base import Backend
from core.cli import ArgumentParser, HelpFormatter, progress
from core.errors import UsageError
from core.files import atomic_write_bytes
from engine.metrics import softmax_cross_entropy, topk_correct
from models.variants import NAMES, variant_of

DEFAULT_IMG_SIZE = {"imagenet": 224, "tinyimagenet": 64}


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def class_folder_count(root: Path, layout: str) -> int:
    """How many classes a dataset folder has (ImageNet: class folders; TinyImageNet: wnids)."""
    from data.imagenet import select_classes
    from data.tinyimagenet import read_wnids

    if layout == "imagenet":
        return len(select_classes(Path(root), None))
    return len(read_wnids(Path(root)))  # non-UTF-8 bytes: one DatasetError line


def eval_classes(available: int, head: int, asked: int | None) -> int:
    """N, the classes to evaluate: --num-classes or the head's width; UsageError if impossible."""
    n = head if asked is None else asked
    if asked is not None and not 1 <= asked <= head:
        raise UsageError(f"--num-classes {asked}: the checkpoint's head has {head} outputs")
    if available < n:
        raise UsageError(
            f"the data has {available} classes but {n} are to be evaluated (the checkpoint's head "
            f"has {head} outputs; class i is scored as output i): give --num-classes {available} "
            f"if these are the first {available} classes the checkpoint was trained on"
        )
    return n


# ---------------------------------------------------------------------------------------------
# the loop and its result
# ---------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    """Counts over the evaluated images; the percentages and mean loss derive from them."""

    images: int
    correct_top1: int
    correct_top5: int
    loss_sum: float

    @property
    def top1(self) -> float:
        return 100.0 * self.correct_top1 / self.images

    @property
    def top5(self) -> float:
        return 100.0 * self.correct_top5 / self.images

    @property
    def loss(self) -> float:
        return self.loss_sum / self.images

    def as_dict(self) -> dict[str, Any]:
        """The report's entries, in its order: images, top1, top5, loss and the hit counts."""
        return {
            "images": self.images,
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "correct_top1": self.correct_top1,
            "correct_top5": self.correct_top5,
        }


def evaluate(
    logits_of: Callable[[np.ndarray], np.ndarray],
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    num_outputs: int,
) -> EvalResult:
    """Sum the top-1/top-5 hits and the cross entropy of ``logits_of(images)`` over ``batches``
    (float32 N x 3 x H x W, int64 labels). ``num_outputs``: the logits' expected width.
    """
    images, correct, loss_sum = 0, np.zeros(2, dtype=np.int64), 0.0
    for x, labels in batches:
        logits = np.asarray(logits_of(x))
        if logits.shape != (len(labels), num_outputs):
            expected = (len(labels), num_outputs)
            raise RuntimeError(f"logits of shape {logits.shape}, expected {expected}")
        loss_sum += float(softmax_cross_entropy(logits, labels).sum())
        correct += topk_correct(logits, labels, (1, 5))
        images += len(labels)
    if images == 0:
        raise UsageError("no images to evaluate")
    return EvalResult(images, int(correct[0]), int(correct[1]), loss_sum)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def add_weights_args(parser: argparse.ArgumentParser) -> None:
    """--checkpoint, --model, --num-classes, --ema, --reparam: what is scored."""
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help=".pth or .pkl of either framework: a training checkpoint, a bare or wrapped state "
        "dict, or an official release file (e.g. overlock_t_in1k_224.pth, *_reparam.pth)",
    )
    parser.add_argument(
        "--model",
        choices=NAMES,
        help="OverLoCK variant (default: the checkpoint's model_name, else recognised from the "
        "weights' keys and shapes)",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        help="evaluate the first N class folders in sorted order, class i scored as head output "
        "i (default: the head's width; the data must have at least N classes)",
    )
    parser.add_argument(
        "--ema",
        action="store_true",
        help="score the EMA weights of a training checkpoint (runs with --ema-decay save them)",
    )
    parser.add_argument(
        "--reparam",
        action="store_true",
        help="merge the dilated branches first and evaluate the deploy form (a *_reparam "
        "checkpoint is already in it)",
    )


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """--data, --split, --img-size, --crop-pct, --batch-size, --workers, --max-per-class."""
    parser.add_argument(
        "--data",
        type=Path,
        help="ImageNet-layout root (val/<class>/*.JPEG) or TinyImageNet-layout folder; default: "
        "the generated dataset training uses",
    )
    parser.add_argument("--split", choices=("val", "train"), default="val", help="split to score")
    parser.add_argument(
        "--img-size",
        type=int,
        help="input side in px (default: 224 for ImageNet layout, 64 for TinyImageNet layout)",
    )
    parser.add_argument(
        "--crop-pct",
        type=float,
        help="centre-crop fraction of the ImageNet evaluation transform (default: the "
        "variant's official value, models/variants.py); TinyImageNet images are resized, not "
        "cropped",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=2, help="loader processes (0: none)")
    parser.add_argument(
        "--max-per-class",
        type=int,
        help="cap images per class for a quick run (default: all; TinyImageNet: its 50 / 500)",
    )


def build_parser(description: str) -> argparse.ArgumentParser:
    """The flags both evaluation scripts share."""
    parser = ArgumentParser(description=description, formatter_class=HelpFormatter)
    add_weights_args(parser)
    add_data_args(parser)
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the model runs (auto: CUDA when available)",
    )
    parser.add_argument("--out", type=Path, help="also write the result to this JSON file")
    return parser


def check_numbers(args: argparse.Namespace) -> None:
    """Reject impossible values with one line (UsageError)."""
    if args.img_size is not None and args.img_size < 32:
        raise UsageError(
            f"--img-size {args.img_size} is too small: OverLoCK downsamples by 32, use >= 32"
        )
    if args.crop_pct is not None and not (math.isfinite(args.crop_pct) and 0 < args.crop_pct <= 1):
        raise UsageError(f"--crop-pct must be in (0, 1] (got {args.crop_pct})")
    if args.batch_size < 1 or args.workers < 0:
        raise UsageError("--batch-size must be >= 1 and --workers >= 0")
    if args.max_per_class is not None and args.max_per_class < 1:
        raise UsageError(f"--max-per-class must be >= 1 (got {args.max_per_class})")
    if args.num_classes is not None and args.num_classes < 1:
        raise UsageError(f"--num-classes must be >= 1 (got {args.num_classes})")


@dataclass
class EvalData:
    """The data to score and how it is read."""

    root: Path
    layout: str  # "imagenet" or "tinyimagenet"
    img_size: int
    crop_pct: float | None  # None for TinyImageNet layout (resized, not cropped)
    classes: int
    dataset: Any


def open_eval_data(args: argparse.Namespace, weights: Weights) -> EvalData:
    """The dataset --data names, with the classes, size and crop the flags and weights give."""
    from data import detect_layout, open_dataset, resolve_data_dir
    from data.imagenet import DEFAULT_CROP_PCT

    root = resolve_data_dir(args.data)
    layout = detect_layout(root)
    if layout == "tinyimagenet" and args.crop_pct is not None:
        raise UsageError("--crop-pct applies to ImageNet-layout data (TinyImageNet is resized)")
    img_size = args.img_size or DEFAULT_IMG_SIZE[layout]
    crop_pct = None
    if layout == "imagenet":
        crop_pct = args.crop_pct or variant_of(weights.model_name)[0].crop_pct
    available = class_folder_count(root, layout)
    classes = eval_classes(available, weights.head_classes, args.num_classes)
    if available > classes:
        print(f"note: {root} has {available} classes; evaluating the first {classes} (sorted)")
    dataset = open_dataset(
        root, args.split, classes, args.max_per_class, img_size, crop_pct or DEFAULT_CROP_PCT
    )
    return EvalData(root, layout, img_size, crop_pct, classes, dataset)


def run_evaluation(
    argv: Sequence[str] | None, description: str, backend_cls: type[Backend]
) -> dict[str, Any]:
    """What evaluate.py and evaluate_torch.py do: returns the report (also printed, and written to
    --out); raises UsageError, DatasetError or CheckpointError on bad input.
    """
    from data import BatchLoader

    args = build_parser(description).parse_args(argv)
    check_numbers(args)
    if args.out is not None:
        check_output(args.out, "--out")
    weights = load_weights(args.checkpoint, args.model, args.ema)
    scored = open_eval_data(args, weights)

    backend = backend_cls(args.device)
    merge = args.reparam and not weights.deploy
    backend.load(weights.state, weights.model_name, weights.head_classes, merge)
    label = weights.model_name + (" (reparameterised)" if merge else "")
    start = time.perf_counter()
    with BatchLoader(
        scored.dataset, args.batch_size, train=False, num_workers=args.workers, strict=True
    ) as loader:
        batches = progress(loader.batches(0), len(loader), f"{backend.name} eval")
        result = evaluate(backend.eval_logits, batches, weights.head_classes)
    seconds = time.perf_counter() - start
    report = {
        "framework": backend.name,
        "device": str(backend.device),
        "model": weights.model_name,
        "reparam": merge or weights.deploy,
        "checkpoint": str(args.checkpoint),
        "data": str(scored.root),
        "layout": scored.layout,
        "split": args.split,
        "classes": scored.classes,
        "head_classes": weights.head_classes,
        "img_size": scored.img_size,
        "crop_pct": scored.crop_pct,
        **result.as_dict(),
        "seconds": seconds,
        "images_per_s": result.images / max(seconds, 1e-9),
    }
    print(
        f"{backend.name}: {label}, {args.checkpoint}: {result.images} images, "
        f"top-1 {result.top1:.3f}%, top-5 {result.top5:.3f}%, loss {result.loss:.4f}"
    )
    if args.out is not None:
        atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode())
    return report
