"""The training scripts' command line: the parser (defaults: the TinyImageNet-20 protocol; the
recipe options resolve after parsing, in ``engine.options``), the argument checks and the
output folder's check. Both scripts use it, so their flags cannot drift apart.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.cli import ArgumentParser
from core.errors import UsageError
from core.files import check_writable_folder
from engine.logs import LATEST
from engine.options import augment_of, resolve_options
from models.variants import NAMES

STOPPING = (
    "Stopping: Ctrl-C (SIGINT), SIGTERM (kill, a job scheduler's time limit or pre-emption, "
    "torchrun/mpirun passing a stop on), SIGHUP (the terminal closed), SIGUSR1 and SIGUSR2 "
    "(schedulers' pre-emption warnings, e.g. Slurm's --signal) end the run after the current "
    "step with a checkpoint that --resume continues bit for bit; a stop during the last step "
    "lets the run finish and save first. Ctrl-C again aborts without saving. Exit status: 0 "
    "done, 1 this machine (disk, device, library), 2 bad input, 3 the loss diverged, 128 + the "
    "signal when stopped by one (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP, 138 SIGUSR1, 140 "
    "SIGUSR2)."
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    # Options resolved after parsing (None here) state their defaults in their own help.
    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


class _TrainingParser(ArgumentParser):
    """Parses (a bad flag: one line), then fills the options left to the protocol or the recipe
    (engine.options)."""

    def __init__(self, framework: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.framework = framework

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        parsed = super().parse_args(args, namespace)
        resolve_options(parsed, self.framework)
        return parsed


def build_parser(framework: str, description: str) -> argparse.ArgumentParser:
    """The command line both training scripts share (defaults: the TinyImageNet-20 protocol)."""
    parser = _TrainingParser(
        framework, description=description, epilog=STOPPING, formatter_class=_HelpFormatter
    )
    _add_data_arguments(parser.add_argument_group("data"))
    _add_model_arguments(parser.add_argument_group("model and optimisation"))
    _add_run_arguments(parser.add_argument_group("run"), framework)
    add_recipe_arguments(parser)
    return parser


def _add_data_arguments(data: argparse._ArgumentGroup) -> None:
    data.add_argument(
        "--data",
        type=Path,
        help="TinyImageNet folder (wnids.txt, train/, val/) or ImageNet folder (train/<class>/, "
        "val/<class>/); default: a small generated dataset in the TinyImageNet layout",
    )
    data.add_argument(
        "--num-classes", type=int, help="first N classes in sorted order (default 20; recipe 1000)"
    )
    data.add_argument(
        "--img-size", type=int, help="images are resized (cropped) to this (default 64; recipe 224)"
    )
    data.add_argument(
        "--train-per-class", type=int, help="cap per class (default 500; recipe: no cap)"
    )
    data.add_argument("--val-per-class", type=int, help="cap per class (default 50; recipe: none)")
    data.add_argument("--workers", type=int, default=2, help="loader worker processes (0: none)")
    data.add_argument(
        "--strict-data", action="store_true", help="stop on a corrupt image instead of skipping it"
    )


def _add_model_arguments(model: argparse._ArgumentGroup) -> None:
    model.add_argument("--model", choices=NAMES, default="xxt", help="OverLoCK variant")
    model.add_argument("--epochs", type=int, help="(default 20; recipe 310 = 300 + 10 cool-down)")
    model.add_argument(
        "--batch-size",
        type=int,
        help="global batch: with N processes (torchrun / mpirun) each takes its 1/N shard "
        "(default 64; recipe 2048 = 8 x 256)",
    )
    model.add_argument(
        "--lr",
        type=float,
        help="AdamW learning rate; with --auto-lr per 1024 images (default 1e-3; recipe 1e-3 "
        "with --auto-lr)",
    )
    model.add_argument(
        "--weight-decay",
        type=float,
        help="AdamW decoupled weight decay, the same explicit value in both frameworks "
        "(default 0.01; recipe 0.05)",
    )
    model.add_argument("--aux-weight", type=float, default=0.4, help="loss = CE(main) + w*CE(aux)")
    model.add_argument(
        "--seed", type=int, help="data order, augmentation, initial weights (default 0; recipe 42)"
    )
    model.add_argument(
        "--init",
        type=Path,
        help="start from these weights (.pth or .pkl, either framework; converted on the fly)",
    )


def _add_run_arguments(run: argparse._ArgumentGroup, framework: str) -> None:
    run.add_argument(
        "--out", type=Path, default=Path("logs") / framework, help="log.csv and checkpoints"
    )
    _add_resume_arguments(run)
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    run.add_argument(
        "--compile",
        action="store_true",
        help="PyTorch: train and evaluate the model through torch.compile (default "
        "arguments); the first step's and evaluation's times, which include compiling, are "
        "printed apart after epoch 1. Jittor always compiles its kernels: a no-op there",
    )
    run.add_argument(
        "--sync-bn",
        action="store_true",
        help="with several processes, BatchNorm statistics over the global batch (as in one "
        "process); default: over each process's shard, as torch DDP does",
    )
    run.add_argument(
        "--max-batches",
        type=int,
        default=0,
        help="cap train and validation batches per epoch (smoke runs); 0: no cap",
    )
    run.add_argument(
        "--cache",
        action=argparse.BooleanOptionalAction,
        help="keep the decoded images in RAM (default: when they fit in 2 GiB and no random "
        "crops are asked for)",
    )


def _add_resume_arguments(run: argparse._ArgumentGroup) -> None:
    run.add_argument(
        "--resume",
        action="store_true",
        help=f"continue from OUT/{LATEST} (same batch order); the settings that change the "
        "run (data, caps, image size, batch size, seed, the optimisation and recipe values) must "
        "be the saved ones, --epochs may grow",
    )
    run.add_argument(
        "--allow-changes",
        action="store_true",
        help="with --resume: continue although those settings differ from the saved ones "
        "(from the saved position on; each change is recorded in OUT/config.json)",
    )


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
    _add_schedule_arguments(group)
    _add_step_arguments(group)
    _add_augment_arguments(group)


def _add_schedule_arguments(group: argparse._ArgumentGroup) -> None:
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


def _add_step_arguments(group: argparse._ArgumentGroup) -> None:
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


def _add_augment_arguments(group: argparse._ArgumentGroup) -> None:
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


def check_args(args: argparse.Namespace, min_img_size: int = 32) -> None:
    """Reject impossible numbers with one clear line (raised as UsageError)."""
    positive = {
        "--num-classes": args.num_classes,
        "--epochs": args.epochs,
        "--batch-size": args.batch_size,
        "--train-per-class": args.train_per_class,
        "--val-per-class": args.val_per_class,
    }
    for flag, value in positive.items():
        if value is not None and value < 1:  # the per-class caps are None for "all"
            raise UsageError(f"{flag} must be at least 1 (got {value})")
    if args.img_size < min_img_size:
        raise UsageError(
            f"--img-size {args.img_size} is too small: OverLoCK downsamples by 32, "
            f"use at least {min_img_size}"
        )
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a positive number (got {args.lr})")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise UsageError(f"--weight-decay must be >= 0 (got {args.weight_decay})")
    if not (math.isfinite(args.aux_weight) and args.aux_weight >= 0):
        raise UsageError(f"--aux-weight must be >= 0 (got {args.aux_weight})")
    if args.workers < 0 or args.max_batches < 0:
        raise UsageError("--workers and --max-batches must be >= 0")
    if args.init is not None and not args.init.is_file():
        raise UsageError(f"--init {args.init}: no such file")
    if args.init is not None and args.resume:
        raise UsageError("--init and --resume exclude each other (a resumed run has its weights)")
    if args.allow_changes and not args.resume:
        raise UsageError("--allow-changes only applies with --resume")
    _check_recipe_args(args)


def _check_recipe_args(args: argparse.Namespace) -> None:
    if min(args.warmup_epochs, args.cooldown_epochs, *args.grad_checkpoint) < 0:
        raise UsageError("--warmup-epochs, --cooldown-epochs and --grad-checkpoint must be >= 0")
    if args.sched == "cosine" and args.epochs <= args.cooldown_epochs + args.warmup_epochs:
        raise UsageError(
            f"--epochs {args.epochs} leaves no cosine epochs after {args.warmup_epochs} warm-up "
            f"and {args.cooldown_epochs} cool-down epochs; lower --warmup-epochs/--cooldown-epochs"
        )
    for flag, value in (("--drop-path", args.drop_path), ("--ema-decay", args.ema_decay)):
        if not 0 <= value < 1:
            raise UsageError(f"{flag} must be in [0, 1) (got {value})")
    if not (math.isfinite(args.clip_grad) and args.clip_grad >= 0):
        raise UsageError(f"--clip-grad must be >= 0 (got {args.clip_grad})")
    if not 0 < args.crop_pct <= 1:
        raise UsageError(f"--crop-pct must be in (0, 1] (got {args.crop_pct})")
    try:
        augment_of(args)
    except ValueError as err:  # the augmentation settings check themselves
        raise UsageError(f"augmentation options: {err}") from None


def prepare_out_dir(out: Path) -> None:
    """Create OUT and prove it is writable before any training time is spent."""
    check_writable_folder(out, f"--out {out}")
