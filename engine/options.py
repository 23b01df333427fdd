"""Training options that are off under the TinyImageNet-20 protocol and on in the official
ImageNet-1k recipe: the learning-rate schedule, weight-decay groups, drop path, EMA, gradient
clipping, mixed precision, gradient checkpointing and the training augmentations.

Options whose default depends on the recipe parse to None; ``resolve_options`` then fills each
from the protocol (``PROTOCOL``) or, with ``--recipe imagenet``, from ``engine.recipe`` for the
chosen variant. A value given on the command line always wins and is reported as a change from
the official recipe. Both training scripts use this, so their options cannot drift apart; the
flags themselves are declared in ``engine.cli``.
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
