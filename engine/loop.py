"""The training run that train.py (Jittor) and train_torch.py (PyTorch) share: data, model,
init or resume, the epochs, log.csv / steps.csv and the checkpoints. Framework-free by design
(the framework is a ``backends.base.Backend``), so the two scripts cannot drift apart in
anything but the framework calls.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import Backend
from core.errors import RunStoppedError, UsageError
from engine.cli import build_parser, check_args, prepare_out_dir
from engine.epoch import DivergedError, run_epoch
from engine.logs import BEST, EMA_COLUMNS, LOG_COLUMNS, STEP_COLUMNS, MainOnlyLog, write_config
from engine.options import augment_of, recipe_report
from engine.settings import describe as describe_changes
from engine.signals import StopSignals
from engine.state import (
    EpochProgress,
    RunStart,
    checkpoint_payload,
    latest_path,
    save_and_stop,
    start_run,
    stop_agreed,
)


def run_cli(
    argv: Sequence[str] | None,
    description: str,
    framework: str,
    load_backend: Callable[[], type[Backend]],
) -> None:
    """What train.py and train_torch.py do: parse ``argv`` (``description``: the script's
    manual; ``framework``: "jittor" or "torch"), import the backend (``load_backend()``, after
    parsing, so --help and a bad flag answer at once), make it from the options, and train.
    """
    args = build_parser(framework, description).parse_args(argv)
    backend_cls = load_backend()
    backend = backend_cls(
        args.device,
        args.lr,
        args.weight_decay,
        args.aux_weight,
        args.clip_grad,
        args.amp,
        compile_model=args.compile,
    )
    run_training(args, backend)


def run_training(args: argparse.Namespace, backend: Backend) -> dict[str, Any]:
    """The whole run: data, model, optional init/resume, epochs, log.csv and checkpoints.
    A stop signal from here on ends it with a saved, resumable checkpoint and exit status
    128 + signal (RunStoppedError), also when it came during the last step: the run then
    completes its last epoch first and says so. Returns the last epoch's log row ({} when a
    resumed run had nothing left to do).
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
            row = _train(args, backend, stop)
            if stop_agreed(backend, stop):  # in the last step, or after it: the run is complete
                raise RunStoppedError(
                    f"stopped by {stop.name} at the end of the run: all {args.epochs} epochs "
                    f"are done and saved in {latest_path(args, backend)}",
                    stop.exit_code,
                )
            return row
    finally:
        backend.close()


@dataclass
class _Logs:
    """log.csv and steps.csv, kept up to the resumed position (written by rank 0 only)."""

    epochs: MainOnlyLog
    steps: MainOnlyLog


def _train(args: argparse.Namespace, backend: Backend, stop: StopSignals) -> dict[str, Any]:
    from data import BatchLoader

    root, train_set, val_set = open_datasets(args, backend)
    args.dataset = str(root)  # a run setting (engine.settings), in config.json too
    backend.build(
        f"overlock_{args.model}",
        args.num_classes,
        args.seed,
        sync_bn=args.sync_bn,
        drop_path=args.drop_path,
        grad_checkpoint=args.grad_checkpoint,
        decay_1d=args.decay_1d,
        ema_decay=args.ema_decay,
    )
    start = start_run(args, backend)
    if start.epoch >= args.epochs:
        if backend.rank == 0:
            print(
                f"{latest_path(args, backend)} has finished all {start.epoch} epochs of this "
                f"run: nothing to do (raise --epochs to train on)",
                flush=True,
            )
        return {}
    _announce(args, backend, root, train_set, val_set, start)
    logs = _open_logs(args, backend, start)
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
        row = _run_epochs(args, backend, stop, train, val, start, logs)
        corrupt = sorted(set(train.corrupt_files) | set(val.corrupt_files))
    if corrupt:
        who = f"process {backend.rank}: " if backend.world_size > 1 else ""
        print(f"warning: {who}{len(corrupt)} unreadable images were replaced: {', '.join(corrupt)}")
    return row


def open_datasets(args: argparse.Namespace, backend: Backend) -> tuple[Path, Any, Any]:
    """(data folder, train split, val split); notes the classes short of the per-class caps.
    A warning about the data's text files is the same in every process: only rank 0 shows it
    (an unreadable image is each process's own and stays reported by each).
    """
    from data import DataWarning, open_dataset, resolve_data_dir

    if backend.rank != 0:
        warnings.filterwarnings("ignore", message=r".*does not list \(", category=DataWarning)
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
        if cap is not None and counts.min() < cap and backend.rank == 0:
            print(
                f"note: {dataset.split}: {int((counts < cap).sum())} of {len(counts)} classes have "
                f"fewer than the {cap} images asked for ({counts.min()} to {counts.max()} per "
                f"class, {len(dataset)} in all); using what was found",
                flush=True,
            )
    return root, train_set, val_set


def _announce(
    args: argparse.Namespace,
    backend: Backend,
    root: Path,
    train_set: Any,
    val_set: Any,
    start: RunStart,
) -> None:
    """config.json and the start lines (framework, data, position, recipe): rank 0 only."""
    info = backend.describe()
    if backend.world_size > 1:
        info["processes"] = backend.world_size
    if backend.rank != 0:
        return
    where = f"epoch {start.epoch + 1}" + (
        f" from batch {start.progress.batches_done + 1}" if start.progress.batches_done else ""
    )
    write_config(args.out, args, info)
    shards = (
        f", {backend.world_size} processes sharing each batch of {args.batch_size}"
        if backend.world_size > 1
        else ""
    )
    print(
        f"{info['framework']} {info['version']} on {info['device']}{shards}: "
        f"overlock_{args.model}, {len(train_set)} train / {len(val_set)} val images of "
        f"{args.num_classes} classes from {root}; {where} to epoch {args.epochs}; "
        f"writing {args.out}",
        flush=True,
    )
    for line in recipe_report(args, backend.name) + _start_notes(args, backend, start):
        print(line, flush=True)


def _start_notes(args: argparse.Namespace, backend: Backend, start: RunStart) -> list[str]:
    notes = backend.start_notes()
    if start.changes:
        changes = describe_changes(start.changes)
        notes.append(f"note: resuming with other settings (--allow-changes): {changes}; "
                     f"recorded in {args.out / 'config.json'}")  # fmt: skip
    if args.compile and backend.name == "jittor":
        notes.append("note: --compile changes nothing in Jittor, which always compiles and "
                     "fuses its kernels (the first step's time includes that)")  # fmt: skip
    return notes


def _open_logs(args: argparse.Namespace, backend: Backend, start: RunStart) -> _Logs:
    main = backend.rank == 0
    columns = LOG_COLUMNS + (EMA_COLUMNS if args.ema_decay > 0 else ())
    done = start.progress.batches_done
    return _Logs(
        MainOnlyLog(
            main, args.out / "log.csv", columns, keep=lambda r: int(r["epoch"]) <= start.epoch
        ),
        MainOnlyLog(
            main,
            args.out / "steps.csv",
            STEP_COLUMNS,
            keep=lambda r: int(r["epoch"]) <= start.epoch
            or (int(r["epoch"]) == start.epoch + 1 and int(r["step"]) <= done),
        ),
    )


def _run_epochs(
    args: argparse.Namespace,
    backend: Backend,
    stop: StopSignals,
    train: Any,
    val: Any,
    start: RunStart,
    logs: _Logs,
) -> dict[str, Any]:
    """Epochs ``start.epoch`` + 1 to ``args.epochs``, each logged and checkpointed; a stop
    signal saves where the run stands and ends it (RunStoppedError), as does a diverged loss.
    """
    n_train = _capped(len(train), args.max_batches)
    n_val = _capped(len(val), args.max_batches)
    best = start.best
    row: dict[str, Any] = {}
    for epoch in range(start.epoch, args.epochs):
        epoch_state = start.progress if epoch == start.epoch else EpochProgress()
        if stop_agreed(backend, stop):  # arrived while loading, validating or saving
            at = f"before epoch {epoch + 1}" + (
                f" batch {epoch_state.batches_done + 1}" if epoch_state.batches_done else ""
            )
            save_and_stop(backend, args, stop, epoch, best, epoch_state, at)
        try:
            row, steps = run_epoch(
                args, backend, train, val, epoch, n_train, n_val, epoch_state, stop
            )
        except DivergedError as err:
            logs.steps.extend(err.steps)
            raise _diverged(args, backend, epoch, err) from None
        logs.steps.extend(steps)
        if row is None:  # interrupted inside the epoch: save where it stopped
            at = f"in epoch {epoch + 1} after batch {epoch_state.batches_done}/{n_train}"
            save_and_stop(backend, args, stop, epoch, best, epoch_state, at)
        logs.epochs.extend([row])
        is_best = row["acc_top1"] > best
        best = max(best, row["acc_top1"])
        if backend.rank == 0:
            _save_epoch(args, backend, epoch, best, is_best, row)
            if epoch == start.epoch:
                _report_compile_times(backend)
    return row


def _report_compile_times(backend: Backend) -> None:
    """With --compile: the first training step and evaluation, compilation included (also in
    epoch 1's times), apart from the rest."""
    times = backend.compile_times()
    if times:
        print(
            f"compiled ({times['compiler']}): first training step {times['train_step_s']:.1f}s, "
            f"first evaluation batch {times['eval_s']:.1f}s (compilation included; in this "
            "epoch's time as well)",
            flush=True,
        )


def _save_epoch(
    args: argparse.Namespace,
    backend: Backend,
    epoch: int,
    best: float,
    is_best: bool,
    row: dict[str, Any],
) -> None:
    from core.serialization import write_checkpoint

    payload = checkpoint_payload(backend, args, epoch + 1, best)
    write_checkpoint(payload, latest_path(args, backend))
    if is_best:
        write_checkpoint(payload, args.out / f"{BEST}{backend.suffix}")
    print(
        f"epoch {epoch + 1}/{args.epochs}: train loss {row['train_loss']:.4f} "
        f"(main {row['train_loss_main']:.4f}, aux {row['train_loss_aux']:.4f}), "
        f"val loss {row['val_loss']:.4f}, top-1 {row['acc_top1']:.2f}%, "
        f"top-5 {row['acc_top5']:.2f}%, {row['epoch_time_s']:.1f}s",
        flush=True,
    )


def _diverged(
    args: argparse.Namespace, backend: Backend, epoch: int, err: DivergedError
) -> RunStoppedError:
    latest = latest_path(args, backend)
    good = (
        f"{latest} (epoch {epoch})"
        if latest.is_file()
        else f"{args.out / f'init{backend.suffix}'} (the initial weights)"
    )
    return RunStoppedError(
        f"loss became {err.loss} at epoch {epoch + 1}, step {err.step}: stopped instead of "
        f"training on garbage; last good checkpoint: {good}. Lower --lr or check the data",
        3,
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
