"""Training options that are off under the TinyImageNet-20 protocol and on in the official
ImageNet-1k recipe: the learning-rate schedule, weight-decay groups, drop path, EMA, gradient
clipping, mixed precision, gradient checkpointing and the training augmentations.

Options whose default depends on the recipe parse to None; ``resolve_options`` then fills each
from the protocol (``PROTOCOL``) or, with ``--recipe imagenet``, from ``engine.recipe`` for the
chosen variant. A value given on the command line always wins and is reported as a change from
the official recipe. Both training scripts use this, so their options cannot drift apart.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from data.augment import Augment
from engine.recipe import Recipe, format_recipe, lr_at, recipe_for

# The TinyImageNet-20 protocol: what an option is when neither it nor --recipe is given.
PROTOCOL: dict[str, Any] = {
    "num_classes": 20,
    "img_size": 64,
    "train_per_class": 500,
    "val_per_class": 50,
    "epochs": 20,
    "batch_size": 64,
    "lr": 1e-3,
    "weight_decay": 0.01,
    "seed": 0,
    "sched": "constant",
    "warmup_epochs": 0,
    "warmup_lr": 1e-6,
    "min_lr": 1e-5,
    "cooldown_epochs": 0,
    "auto_lr": False,
    "decay_1d": True,
    "drop_path": 0.0,
    "ema_decay": 0.0,
    "clip_grad": 0.0,
    "amp": False,
    "grad_checkpoint": (0, 0, 0, 0),
    "smoothing": 0.0,
    "mixup": 0.0,
    "cutmix": 0.0,
    "mix_prob": 1.0,
    "switch_prob": 0.5,
    "random_resized_crop": False,
    "aa": "",
    "train_interpolation": "random",
    "reprob": 0.0,
    "crop_pct": None,  # ImageNet-layout evaluation crop; None: the variant's official value
}


def recipe_values(recipe: Recipe) -> dict[str, Any]:
    """The options of ``PROTOCOL`` as the official recipe sets them."""
    return {
        "num_classes": recipe.num_classes,
        "img_size": recipe.img_size,
        "train_per_class": None,  # all images
        "val_per_class": None,
        "epochs": recipe.total_epochs,
        "batch_size": recipe.batch_size * recipe.world_size,
        "lr": recipe.base_lr,
        "weight_decay": recipe.weight_decay,
        "seed": recipe.seed,
        "sched": recipe.sched,
        "warmup_epochs": recipe.warmup_epochs,
        "warmup_lr": recipe.warmup_lr,
        "min_lr": recipe.min_lr,
        "cooldown_epochs": recipe.cooldown_epochs,
        "auto_lr": True,
        "decay_1d": False,
        "drop_path": recipe.drop_path,
        "ema_decay": recipe.ema_decay,
        "clip_grad": recipe.clip_grad,
        "amp": recipe.amp,
        "grad_checkpoint": (0, 0, 0, 0),  # off in the official scripts
        "smoothing": recipe.smoothing,
        "mixup": recipe.mixup,
        "cutmix": recipe.cutmix,
        "mix_prob": recipe.mix_prob,
        "switch_prob": recipe.switch_prob,
        "random_resized_crop": True,
        "aa": recipe.auto_augment,
        "train_interpolation": recipe.train_interpolation,
        "reprob": recipe.reprob,
        "crop_pct": recipe.crop_pct,
    }


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``recipe`` option group (every default: off, i.e. the TinyImageNet-20 protocol)."""
    group = parser.add_argument_group(
        "training recipe",
        "All off by default (the TinyImageNet-20 protocol). --recipe imagenet sets each option "
        "below, and the data and optimisation defaults, to the official ImageNet-1k value for "
        "--model (printed at start); options given explicitly override it.",
    )
    group.add_argument(
        "--recipe", choices=("imagenet",), help="the official ImageNet-1k pre-training recipe"
    )
    group.add_argument(
        "--sched",
        choices=("constant", "cosine"),
        help="learning rate per epoch: constant, or timm's cosine (set once per epoch, as the "
        "official run) from --lr to --min-lr over the epochs before the cool-down",
    )
    group.add_argument("--warmup-epochs", type=int, help="linear warm-up from --warmup-lr")
    group.add_argument("--warmup-lr", type=float, help="learning rate of epoch 1 with warm-up")
    group.add_argument("--min-lr", type=float, help="end of the cosine; the cool-down's rate")
    group.add_argument("--cooldown-epochs", type=int, help="last epochs at --min-lr")
    group.add_argument(
        "--auto-lr",
        action=argparse.BooleanOptionalAction,
        help="scale --lr by global batch / 1024 (official: 1e-3 x 2048 / 1024 = 2e-3)",
    )
    group.add_argument(
        "--decay-1d",
        action=argparse.BooleanOptionalAction,
        help="weight decay on biases and 1-D parameters too (protocol: yes; recipe: no, as timm)",
    )
    group.add_argument("--drop-path", type=float, help="stochastic depth rate (0: off)")
    group.add_argument(
        "--ema-decay", type=float, help="model EMA decay after every step, validated too (0: off)"
    )
    group.add_argument("--clip-grad", type=float, help="clip the gradients' 2-norm (0: off)")
    group.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        help="mixed precision (PyTorch only: float16 + GradScaler on CUDA, bfloat16 on CPU)",
    )
    group.add_argument(
        "--grad-checkpoint",
        type=int,
        nargs=4,
        metavar="N",
        help="recompute the first N blocks of each stage in the backward pass (PyTorch only): "
        "less memory, the same gradients; as in the official code their BatchNorm statistics "
        "are updated twice per step. Official hint when memory is short: 4 0 0 0",
    )
    group.add_argument("--smoothing", type=float, help="label smoothing")
    group.add_argument("--mixup", type=float, help="mixup alpha (0: off)")
    group.add_argument("--cutmix", type=float, help="cutmix alpha (0: off)")
    group.add_argument("--mix-prob", type=float, help="probability of mixing a batch")
    group.add_argument("--switch-prob", type=float, help="probability of cutmix over mixup")
    group.add_argument(
        "--random-resized-crop",
        action=argparse.BooleanOptionalAction,
        help="random resized crop (0.08-1 of the area) + flip instead of resize + flip",
    )
    group.add_argument("--aa", help="RandAugment policy, e.g. rand-m9-mstd0.5-inc1 (needs crops)")
    group.add_argument(
        "--train-interpolation",
        choices=("bilinear", "bicubic", "random"),
        help="filter of the random resized crop",
    )
    group.add_argument("--reprob", type=float, help="random erasing probability (0: off)")
    group.add_argument(
        "--crop-pct",
        type=float,
        help="ImageNet-layout validation: resize to img-size / crop-pct, centre crop "
        "(default: the variant's official value)",
    )


def resolve_options(args: argparse.Namespace, framework: str) -> None:
    """Fill every None option from the protocol or the recipe, in place; record the recipe and
    the explicit changes to it in ``args.recipe_changes`` (``--auto-lr`` also turns ``--lr`` into
    the peak rate, keeping the given one as ``args.base_lr``).
    """
    recipe = recipe_for(args.model) if args.recipe else None
    source = recipe_values(recipe) if recipe else PROTOCOL
    if recipe and framework == "jittor":
        source = {**source, "amp": False}  # Jittor 1.3.11 has no autocast mixed precision
    changes = []
    for name, value in source.items():
        given = getattr(args, name, None)
        if given is None:
            setattr(args, name, value)
        elif recipe and _differs(given, value):
            changes.append(f"--{name.replace('_', '-')} {_show(given)} (official {_show(value)})")
    args.grad_checkpoint = tuple(args.grad_checkpoint)
    if args.crop_pct is None:
        args.crop_pct = recipe_for(args.model).crop_pct
    args.recipe_changes = changes
    args.base_lr = args.lr
    if args.auto_lr:
        args.lr = args.lr * args.batch_size / 1024


def _differs(given: Any, official: Any) -> bool:
    if isinstance(official, float) and isinstance(given, int | float):
        return not math.isclose(given, official, rel_tol=1e-12)
    if isinstance(official, tuple):
        return tuple(given) != official
    return given != official


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple | list) else str(value)


def recipe_report(args: argparse.Namespace, framework: str) -> list[str]:
    """Lines printed at the start of a --recipe run: every official value with its source, then
    what this run changes.
    """
    if not args.recipe:
        return []
    lines = format_recipe(recipe_for(args.model), args.batch_size)
    if framework == "jittor":
        lines.append("  Jittor: amp off (Jittor 1.3.11 has no autocast mixed precision; float32)")
    lines.append("  changed on the command line: " + ("; ".join(args.recipe_changes) or "nothing"))
    return lines


def augment_of(args: argparse.Namespace) -> Augment:
    """The loader's training augmentations (``data.augment.Augment``) for these options."""
    return Augment(
        random_resized_crop=args.random_resized_crop,
        interpolation=args.train_interpolation,
        auto_augment=args.aa,
        mixup=args.mixup,
        cutmix=args.cutmix,
        mix_prob=args.mix_prob,
        switch_prob=args.switch_prob,
        smoothing=args.smoothing,
        reprob=args.reprob,
    )


def epoch_lr(args: argparse.Namespace, epoch: int) -> float:
    """The learning rate of 0-based ``epoch`` (constant within an epoch, as the official run)."""
    if args.sched == "constant":
        if epoch < args.warmup_epochs:
            return args.warmup_lr + epoch * (args.lr - args.warmup_lr) / args.warmup_epochs
        return args.lr
    cosine_epochs = args.epochs - args.cooldown_epochs
    return lr_at(
        epoch, args.lr, cosine_epochs, args.warmup_epochs, args.warmup_lr, args.min_lr
    )  # fmt: skip
