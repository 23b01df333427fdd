"""What train.py (Jittor) and train_torch.py (PyTorch) share: the command line, argument checks,
the per-epoch CSV log, metrics and the progress display. Framework-free by design, so the two
scripts cannot drift apart in anything but the framework calls.
"""

from __future__ import annotations

import argparse
import itertools
import math
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import Backend
from core.cli import progress
from core.errors import RunStoppedError, UsageError
from engine.logs import BEST, EMA_COLUMNS, LATEST, LOG_COLUMNS, STEP_COLUMNS, CsvLog, write_config
from engine.metrics import softmax_cross_entropy, topk_correct
from engine.options import (
    add_recipe_arguments,
    augment_of,
    epoch_lr,
    recipe_report,
    resolve_options,
)
from models.variants import NAMES as MODELS


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    # Options resolved after parsing (None here) state their defaults in their own help.
    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


class _TrainingParser(argparse.ArgumentParser):
    """Parses, then fills the options left to the protocol or the recipe (engine.options)."""

    def __init__(self, framework: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.framework = framework

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        parsed = super().parse_args(args, namespace)
        resolve_options(parsed, self.framework)
        return parsed


def build_parser(framework: str, description: str) -> argparse.ArgumentParser:
    """The command line both training scripts share (defaults: the TinyImageNet-20 protocol)."""
    parser = _TrainingParser(framework, description=description, formatter_class=_HelpFormatter)
    data = parser.add_argument_group("data")
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
    model = parser.add_argument_group("model and optimisation")
    model.add_argument("--model", choices=MODELS, default="xxt", help="OverLoCK variant")
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
    run = parser.add_argument_group("run")
    run.add_argument(
        "--out", type=Path, default=Path("logs") / framework, help="log.csv and checkpoints"
    )
    run.add_argument(
        "--resume", action="store_true", help=f"continue from OUT/{LATEST} (same batch order)"
    )
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
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
    add_recipe_arguments(parser)
    return parser


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
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UsageError(
            f"--out {out} is not writable ({err.strerror}); choose another folder"
        ) from err


@dataclass
class EpochProgress:
    """How far the current epoch got: saved with an interrupted run so --resume continues at the
    next batch with the same running loss sums (the resumed log.csv row equals an uninterrupted
    one; only the timing columns differ).
    """

    batches_done: int = 0
    loss_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # total, main, aux
    images_seen: int = 0
    step_time_s: float = 0.0  # time inside train steps (images/s)
    elapsed_s: float = 0.0  # wall time of the epoch so far (epoch_time_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches_done": self.batches_done,
            "loss_sums": [float(v) for v in self.loss_sums],
            "images_seen": self.images_seen,
            "step_time_s": self.step_time_s,
            "elapsed_s": self.elapsed_s,
        }

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any] | None) -> EpochProgress:
        if not saved:
            return cls()
        return cls(
            batches_done=int(saved["batches_done"]),
            loss_sums=[float(v) for v in saved["loss_sums"]],
            images_seen=int(saved["images_seen"]),
            step_time_s=float(saved["step_time_s"]),
            elapsed_s=float(saved["elapsed_s"]),
        )


class StopSignals:
    """While active, SIGINT (Ctrl-C) and SIGTERM (kill, job schedulers) ask the training loop to
    stop after the current step, so it can save a resumable state; a second Ctrl-C aborts at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        print(
            f"\n{signal.Signals(signum).name}: stopping after this step to save a resumable "
            "state (Ctrl-C again aborts without saving)",
            file=sys.stderr,
            flush=True,
        )

    @property
    def exit_code(self) -> int:
        return 128 + int(self.received or signal.SIGINT)

    def join(self, told: float) -> bool:
        """Whether to stop, given ``told`` = the sum over processes of ``received or 0``: all
        must stop after the same step, or the others would wait forever in the next collective.
        A process that got no signal itself stops as if sent SIGTERM.
        """
        if told > 0 and self.received is None:
            self.received = signal.SIGTERM
        return told > 0


def _checkpoint_payload(
    backend: Backend,
    args: argparse.Namespace,
    epoch: int,
    best: float,
    progress_in_epoch: EpochProgress | None = None,
) -> dict[str, Any]:
    ema = backend.ema_state()
    return {
        "model": backend.model_state(),
        **({"model_ema": ema} if ema is not None else {}),
        "optimizer": backend.optimizer_state(),
        "epoch": epoch,  # completed epochs
        "best_acc_top1": float(best),
        "model_name": f"overlock_{args.model}",
        "num_classes": args.num_classes,
        "framework": backend.name,
        # Set when interrupted mid-epoch: where epoch + 1 stopped. All data randomness derives
        # from (seed, epoch, index) and drop path is reseeded per step, so no RNG state is needed.
        "epoch_progress": progress_in_epoch.to_dict() if progress_in_epoch else None,
    }


def run_training(args: argparse.Namespace, backend: Backend) -> dict[str, Any]:
    """The whole run: data, model, optional init/resume, epochs, log.csv and checkpoints.
    SIGINT/SIGTERM from here on end it with a saved, resumable checkpoint (RunStoppedError).
    """
    check_args(args)
    if args.batch_size < backend.world_size:
        raise UsageError(
            f"--batch-size {args.batch_size} is the global batch and cannot be split over "
            f"{backend.world_size} processes; use at least {backend.world_size}"
        )
    if backend.rank == 0:
        prepare_out_dir(args.out)
    try:
        with StopSignals() as stop:
            return _train(args, backend, stop)
    finally:
        backend.close()


def _train(args: argparse.Namespace, backend: Backend, stop: StopSignals) -> dict[str, Any]:
    from core.serialization import read_checkpoint, write_checkpoint
    from data import BatchLoader, resolve_data_dir
    from data.imagenet import open_dataset
    from models.weights import check_state, load_state_dict

    model_name = f"overlock_{args.model}"
    main = backend.rank == 0  # the one process that prints and writes
    root = resolve_data_dir(args.data)
    sets = {
        split: open_dataset(root, split, args.num_classes, cap, args.img_size, args.crop_pct)
        for split, cap in (("train", args.train_per_class), ("val", args.val_per_class))
    }
    train_set, val_set = sets["train"], sets["val"]
    last_batch = len(train_set) % args.batch_size
    if 0 < last_batch < backend.world_size:
        raise UsageError(
            f"the last training batch has {last_batch} images, fewer than the "
            f"{backend.world_size} processes to share it; choose another --batch-size"
        )
    for dataset, cap in ((train_set, args.train_per_class), (val_set, args.val_per_class)):
        counts = np.bincount(dataset.labels, minlength=dataset.num_classes)
        if cap is not None and counts.min() < cap and main:
            print(
                f"note: {dataset.split}: {int((counts < cap).sum())} of {len(counts)} classes have "
                f"fewer than the {cap} images asked for ({counts.min()} to {counts.max()} per "
                f"class, {len(dataset)} in all); using what was found",
                flush=True,
            )
    backend.build(
        model_name,
        args.num_classes,
        args.seed,
        sync_bn=args.sync_bn,
        drop_path=args.drop_path,
        grad_checkpoint=args.grad_checkpoint,
        decay_1d=args.decay_1d,
        ema_decay=args.ema_decay,
    )

    start_epoch, best, resumed = 0, -1.0, EpochProgress()
    latest = args.out / f"{LATEST}{backend.suffix}"
    if args.resume:
        if not latest.is_file():
            raise UsageError(f"--resume: {latest} does not exist; start without --resume")
        saved = read_checkpoint(latest)
        if not isinstance(saved, dict) or "optimizer" not in saved:
            raise UsageError(f"--resume: {latest} is not a training checkpoint of these scripts")
        if saved.get("model_name") != model_name or saved.get("num_classes") != args.num_classes:
            raise UsageError(
                f"--resume: {latest} is {saved.get('model_name')} with "
                f"{saved.get('num_classes')} classes, not {model_name} with {args.num_classes}"
            )
        check_state(saved["model"], model_name, args.num_classes)
        backend.load_model_state(saved["model"])
        if args.ema_decay > 0:
            if "model_ema" not in saved:
                raise UsageError(f"--resume: {latest} has no EMA weights; drop --ema-decay")
            backend.load_ema_state(saved["model_ema"])
        backend.load_optimizer_state(saved["optimizer"])
        start_epoch, best = int(saved["epoch"]), float(saved["best_acc_top1"])
        resumed = EpochProgress.from_dict(saved.get("epoch_progress"))
    else:
        if args.init is not None:
            state = load_state_dict(args.init)
            check_state(state, model_name, args.num_classes)
            backend.load_model_state(state)
        if main:
            write_checkpoint(backend.model_state(), args.out / f"init{backend.suffix}")

    if start_epoch >= args.epochs:
        if main:
            print(
                f"{latest} has finished all {start_epoch} epochs of this run: nothing to do "
                f"(raise --epochs to train on)",
                flush=True,
            )
        return {}
    info = backend.describe()
    if backend.world_size > 1:
        info["processes"] = backend.world_size
    where = f"epoch {start_epoch + 1}" + (
        f" from batch {resumed.batches_done + 1}" if resumed.batches_done else ""
    )
    if main:
        write_config(args.out, args, {"dataset": str(root), **info})
        shards = (
            f", {backend.world_size} processes sharing each batch of {args.batch_size}"
            if backend.world_size > 1
            else ""
        )
        print(
            f"{info['framework']} {info['version']} on {info['device']}{shards}: {model_name}, "
            f"{len(train_set)} train / {len(val_set)} val images of {args.num_classes} classes "
            f"from {root}; {where} to epoch {args.epochs}; writing {args.out}",
            flush=True,
        )
        for line in recipe_report(args, backend.name):
            print(line, flush=True)
    columns = LOG_COLUMNS + (EMA_COLUMNS if args.ema_decay > 0 else ())
    log = _MainOnlyLog(
        main, args.out / "log.csv", columns, keep=lambda r: int(r["epoch"]) <= start_epoch
    )
    step_log = _MainOnlyLog(
        main,
        args.out / "steps.csv",
        STEP_COLUMNS,
        keep=lambda r: int(r["epoch"]) <= start_epoch
        or (int(r["epoch"]) == start_epoch + 1 and int(r["step"]) <= resumed.batches_done),
    )
    opts = {
        "num_workers": args.workers,
        "strict": args.strict_data,
        "rank": backend.rank,
        "world_size": backend.world_size,
    }
    augment = augment_of(args)
    train_cache = _use_cache(args, train_set, augment.random_resized_crop)
    with (
        BatchLoader(
            train_set, args.batch_size, seed=args.seed, train=True, cache=train_cache,
            augment=augment, **opts,
        ) as train,
        BatchLoader(
            val_set, args.batch_size, seed=args.seed, train=False,
            cache=_use_cache(args, val_set, False), **opts,
        ) as val,
    ):  # fmt: skip
        n_train = _capped(len(train), args.max_batches)
        n_val = _capped(len(val), args.max_batches)
        row: dict[str, Any] = {}
        for epoch in range(start_epoch, args.epochs):
            epoch_state = resumed if epoch == start_epoch else EpochProgress()
            if _stop_agreed(backend, stop):  # arrived while loading, validating or saving
                at = f"before epoch {epoch + 1}" + (
                    f" batch {epoch_state.batches_done + 1}" if epoch_state.batches_done else ""
                )
                _save_and_stop(backend, args, stop, latest, epoch, best, epoch_state, at)
            try:
                row, steps = _run_epoch(
                    args, backend, train, val, epoch, n_train, n_val, epoch_state, stop
                )
            except _DivergedError as err:
                step_log.extend(err.steps)
                good = (
                    f"{latest} (epoch {epoch})"
                    if latest.is_file()
                    else (f"{args.out / f'init{backend.suffix}'} (the initial weights)")
                )
                raise RunStoppedError(
                    f"loss became {err.loss} at epoch {epoch + 1}, step {err.step}: stopped "
                    f"instead of training on garbage; last good checkpoint: {good}. "
                    "Lower --lr or check the data",
                    3,
                ) from None
            step_log.extend(steps)
            if row is None:  # interrupted inside the epoch: save where it stopped
                at = f"in epoch {epoch + 1} after batch {epoch_state.batches_done}/{n_train}"
                _save_and_stop(backend, args, stop, latest, epoch, best, epoch_state, at)
            log.extend([row])
            is_best = row["acc_top1"] > best
            best = max(best, row["acc_top1"])
            if not main:
                continue
            payload = _checkpoint_payload(backend, args, epoch + 1, best)
            write_checkpoint(payload, latest)
            if is_best:
                write_checkpoint(payload, args.out / f"{BEST}{backend.suffix}")
            print(
                f"epoch {epoch + 1}/{args.epochs}: train loss {row['train_loss']:.4f} "
                f"(main {row['train_loss_main']:.4f}, aux {row['train_loss_aux']:.4f}), "
                f"val loss {row['val_loss']:.4f}, top-1 {row['acc_top1']:.2f}%, "
                f"top-5 {row['acc_top5']:.2f}%, {row['epoch_time_s']:.1f}s",
                flush=True,
            )
        corrupt = sorted(set(train.corrupt_files) | set(val.corrupt_files))
    if corrupt:
        who = f"process {backend.rank}: " if backend.world_size > 1 else ""
        print(f"warning: {who}{len(corrupt)} unreadable images were replaced: {', '.join(corrupt)}")
    return row


class _MainOnlyLog(CsvLog):
    """A CsvLog that only the main process writes (the others keep nothing)."""

    def __init__(self, main: bool, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.main = main

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        if self.main:
            super().extend(rows)


def _stop_agreed(backend: Backend, stop: StopSignals) -> bool:
    """Whether any process was told to stop (a collective of its own, between steps)."""
    return stop.join(backend.all_reduce_sum([float(stop.received or 0)])[0])


def _save_and_stop(
    backend: Backend,
    args: argparse.Namespace,
    stop: StopSignals,
    latest: Path,
    epoch: int,
    best: float,
    state: EpochProgress,
    at: str,
) -> None:
    from core.serialization import write_checkpoint

    if backend.rank == 0:
        write_checkpoint(_checkpoint_payload(backend, args, epoch, best, state), latest)
    backend.barrier()  # a launcher stops every process once one exits: let the save finish
    raise RunStoppedError(
        f"stopped by {signal.Signals(stop.received or signal.SIGINT).name} {at}: "
        f"saved {latest}; continue with --resume",
        stop.exit_code,
    )


def _use_cache(args: argparse.Namespace, dataset: Any, random_crops: bool) -> bool:
    """--cache, or by default: when the decoded split fits in 2 GiB and needs no random crops
    (those are cut from the original images, which the cache does not hold).
    """
    if args.cache is not None:
        if args.cache and random_crops:
            raise UsageError("--cache cannot serve random resized crops; use --no-cache")
        return args.cache
    return not random_crops and len(dataset) * 3 * dataset.img_size**2 <= 2 << 30


def _capped(n: int, cap: int) -> int:
    return min(n, cap) if cap else n


class _DivergedError(Exception):
    def __init__(self, loss: float, step: int, steps: list[dict[str, Any]]) -> None:
        super().__init__(f"loss {loss} at step {step}")
        self.loss, self.step, self.steps = loss, step, steps


def _run_epoch(
    args: argparse.Namespace,
    backend: Backend,
    train: Any,
    val: Any,
    epoch: int,
    n_train: int,
    n_val: int,
    state: EpochProgress,
    stop: StopSignals,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Train the rest of ``epoch`` from ``state`` (updated in place) and validate. Returns
    (log row, step rows); the row is None when a stop signal ended the epoch early.
    """
    start = time.perf_counter() - state.elapsed_s
    sums = state.loss_sums  # per-image loss x batch size, summed; kept in the resumable state
    lr = epoch_lr(args, epoch)
    backend.set_lr(lr)
    steps: list[dict[str, Any]] = []
    batches = itertools.islice(
        train.batches(epoch, state.batches_done), n_train - state.batches_done
    )
    bar = progress(
        batches,
        n_train,
        f"{backend.name} epoch {epoch + 1}",
        initial=state.batches_done,
        show=backend.rank == 0,
    )
    n_images = len(train.dataset)
    for images, labels in bar:
        # This process holds a shard of the global batch; its loss weighs by the shard's size.
        n_batch = min(args.batch_size, n_images - state.batches_done * args.batch_size)
        if args.drop_path > 0:
            backend.reseed(_step_seed(args.seed, epoch, state.batches_done))
        t0 = time.perf_counter()
        local = backend.train_step(images, labels, backend.world_size * len(labels) / n_batch)
        weighted = [v * len(labels) for v in local]
        # One collective per step: the global batch's losses and whether anyone must stop.
        *weighted, told = backend.all_reduce_sum([*weighted, float(stop.received or 0)])
        state.step_time_s += time.perf_counter() - t0
        losses = [v / n_batch for v in weighted]
        step = state.batches_done + 1
        steps.append(dict(zip(STEP_COLUMNS, (epoch + 1, step, *losses), strict=True)))
        if not all(math.isfinite(v) for v in losses):
            bar.close()
            raise _DivergedError(losses[0], step, steps)
        for i, value in enumerate(weighted):
            sums[i] += value
        state.batches_done, state.images_seen = step, state.images_seen + n_batch
        state.elapsed_s = time.perf_counter() - start
        mean_loss = sums[0] / state.images_seen
        bar.set_postfix(
            loss=f"{mean_loss:.4f}",
            img_s=f"{state.images_seen / max(state.step_time_s, 1e-9):.1f}",
            refresh=False,
        )
        if stop.join(told) and state.batches_done < n_train:
            bar.close()
            return None, steps
    bar.close()
    train_time = time.perf_counter() - start

    # Every process evaluates its shard with rank 0's BatchNorm statistics (the saved ones).
    backend.broadcast_buffers()
    seen = max(state.images_seen, 1)
    row = {
        "epoch": epoch + 1,
        "train_loss": sums[0] / seen,
        "train_loss_main": sums[1] / seen,
        "train_loss_aux": sums[2] / seen,
        **_validate(backend, val, epoch, n_val, with_ema=args.ema_decay > 0),
        "epoch_time_s": time.perf_counter() - start,
        "train_images_per_s": state.images_seen / max(train_time, 1e-9),
        "lr": lr,
    }
    return row, steps


def _validate(
    backend: Backend, val: Any, epoch: int, n_val: int, with_ema: bool
) -> dict[str, float]:
    """Loss and top-1/top-5 of the main head over all processes' shards, and of the EMA model
    (``ema_*`` columns) on the same decoded batches when ``with_ema``.
    """
    prefixes = ("", "ema_") if with_ema else ("",)
    sums = np.zeros((len(prefixes), 4))  # loss sum, top-1, top-5, count per model
    for images, labels in itertools.islice(val.batches(epoch), n_val):
        if len(labels) == 0:  # this process's shard of a last batch smaller than world size
            continue
        for row, prefix in enumerate(prefixes):
            logits = backend.eval_logits(images, ema=prefix == "ema_")
            loss = float(softmax_cross_entropy(logits, labels).sum())
            sums[row] += [loss, *topk_correct(logits, labels), len(labels)]
    totals = backend.all_reduce_sum(sums.ravel()).reshape(sums.shape)
    metrics = {}
    for prefix, (loss_sum, top1, top5, count) in zip(prefixes, totals, strict=True):
        metrics[f"{prefix}val_loss"] = loss_sum / count
        metrics[f"{prefix}acc_top1"] = 100.0 * float(top1) / count
        metrics[f"{prefix}acc_top5"] = 100.0 * float(top5) / count
    return metrics


def _step_seed(seed: int, epoch: int, batch: int) -> int:
    """A 63-bit seed for the framework RNG at (epoch, batch): stream 8 of the loader's hash."""
    from data.loader import counter_hash

    return int(counter_hash(seed, epoch, 8, np.array([batch]))[0] >> np.uint64(1))
