"""One epoch: the training steps from wherever the epoch stands (losses summed over processes,
a stop signal honoured between steps, a non-finite loss ending the run) and the validation of
the model and its EMA.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from typing import Any

import numpy as np

from backends.base import Backend
from core.cli import progress
from data.streams import step_seed
from engine.logs import STEP_COLUMNS
from engine.metrics import softmax_cross_entropy, topk_correct
from engine.options import epoch_lr
from engine.signals import StopSignals
from engine.state import EpochProgress


class DivergedError(Exception):
    """A step's loss was not finite; ``steps``: the epoch's step rows up to and with that one."""

    def __init__(self, loss: float, step: int, steps: list[dict[str, Any]]) -> None:
        super().__init__(f"loss {loss} at step {step}")
        self.loss, self.step, self.steps = loss, step, steps


def run_epoch(
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
    lr = epoch_lr(args, epoch)
    backend.set_lr(lr)
    steps, finished = _train_steps(args, backend, train, epoch, n_train, state, stop, start)
    if not finished:
        return None, steps
    train_time = time.perf_counter() - start

    # Every process evaluates its shard with rank 0's BatchNorm statistics (the saved ones).
    backend.broadcast_buffers()
    seen = max(state.images_seen, 1)
    sums = state.loss_sums  # per-image loss x batch size, summed
    row = {
        "epoch": epoch + 1,
        "train_loss": sums[0] / seen,
        "train_loss_main": sums[1] / seen,
        "train_loss_aux": sums[2] / seen,
        **validate(backend, val, epoch, n_val, with_ema=args.ema_decay > 0),
        "epoch_time_s": time.perf_counter() - start,
        "train_images_per_s": state.images_seen / max(train_time, 1e-9),
        "lr": lr,
    }
    return row, steps


def _train_steps(
    args: argparse.Namespace,
    backend: Backend,
    train: Any,
    epoch: int,
    n_train: int,
    state: EpochProgress,
    stop: StopSignals,
    start: float,
) -> tuple[list[dict[str, Any]], bool]:
    """The epoch's remaining steps; (step rows, whether every step ran: no stop came first)."""
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
    try:
        for batch in bar:
            told = _train_step(args, backend, epoch, state, stop, batch, n_images, steps)
            state.elapsed_s = time.perf_counter() - start
            mean_loss = state.loss_sums[0] / state.images_seen
            bar.set_postfix(
                loss=f"{mean_loss:.4f}",
                img_s=f"{state.images_seen / max(state.step_time_s, 1e-9):.1f}",
                refresh=False,
            )
            if stop.join(told) and state.batches_done < n_train:
                return steps, False
    finally:
        bar.close()
    return steps, True


def _train_step(
    args: argparse.Namespace,
    backend: Backend,
    epoch: int,
    state: EpochProgress,
    stop: StopSignals,
    batch: tuple[np.ndarray, np.ndarray],
    n_images: int,
    steps: list[dict[str, Any]],
) -> float:
    """One step on this process's shard of ``batch``; appends its row to ``steps``, advances
    ``state`` and returns the sum over processes of the stop signals received.
    """
    images, labels = batch
    # This process holds a shard of the global batch; its loss weighs by the shard's size.
    n_batch = min(args.batch_size, n_images - state.batches_done * args.batch_size)
    if args.drop_path > 0:
        backend.reseed(step_seed(args.seed, epoch, state.batches_done))
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
        raise DivergedError(losses[0], step, steps)
    for i, value in enumerate(weighted):
        state.loss_sums[i] += value
    state.batches_done, state.images_seen = step, state.images_seen + n_batch
    return told


def validate(
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
