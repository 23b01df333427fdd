"""Where a run stands and how it survives an interruption: the position inside an epoch, the
training checkpoint's contents, the start from --init or --resume (its settings checked against
the saved run's, ``engine.settings``), and the save-then-stop on a signal (``engine.signals``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from backends.base import Backend
from core.errors import RunStoppedError, UsageError
from engine.logs import LATEST
from engine.settings import describe, differences, run_settings
from engine.signals import StopSignals


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


@dataclass
class RunStart:
    """Where a run begins: completed epochs, the best top-1 so far, the position in the next."""

    epoch: int = 0
    best: float = -1.0
    progress: EpochProgress = field(default_factory=EpochProgress)
    changes: dict[str, list[Any]] = field(default_factory=dict)  # accepted by --allow-changes


def latest_path(args: argparse.Namespace, backend: Backend) -> Path:
    """OUT/checkpoint_latest.pth or .pkl: the resumable state after each epoch or a stop."""
    return args.out / f"{LATEST}{backend.suffix}"


def checkpoint_payload(
    backend: Backend,
    args: argparse.Namespace,
    epoch: int,
    best: float,
    progress_in_epoch: EpochProgress | None = None,
) -> dict[str, Any]:
    """The training checkpoint: weights (and EMA), AdamW state and the run's position."""
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
        # What --resume compares (engine.settings) and the changes it was told to accept.
        "settings": run_settings(args),
        "resumed_with_changes": list(getattr(args, "resumed_with_changes", [])),
    }


def start_run(args: argparse.Namespace, backend: Backend) -> RunStart:
    """After ``backend.build``: load OUT's latest checkpoint (--resume), or the --init weights;
    a fresh run's starting weights are saved as OUT/init.pth or .pkl.
    """
    from core.serialization import write_checkpoint
    from models.weights import check_state, load_state_dict

    if args.resume:
        return _resume(args, backend)
    args.resumed_with_changes = []
    if args.init is not None:
        state = load_state_dict(args.init)
        check_state(state, f"overlock_{args.model}", args.num_classes)
        backend.load_model_state(state)
    if backend.rank == 0:
        write_checkpoint(backend.model_state(), args.out / f"init{backend.suffix}")
    return RunStart()


def _resume(args: argparse.Namespace, backend: Backend) -> RunStart:
    from core.serialization import read_checkpoint
    from models.weights import check_state

    model_name = f"overlock_{args.model}"
    latest = latest_path(args, backend)
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
    changes = _accept_settings(args, saved, latest)
    check_state(saved["model"], model_name, args.num_classes)
    backend.load_model_state(saved["model"])
    if args.ema_decay > 0:
        if "model_ema" not in saved:
            raise UsageError(f"--resume: {latest} has no EMA weights; drop --ema-decay")
        backend.load_ema_state(saved["model_ema"])
    backend.load_optimizer_state(saved["optimizer"])
    progress = EpochProgress.from_dict(saved.get("epoch_progress"))
    return RunStart(int(saved["epoch"]), float(saved["best_acc_top1"]), progress, changes)


def _accept_settings(
    args: argparse.Namespace, saved: dict[str, Any], latest: Path
) -> dict[str, list[Any]]:
    """Refuse to resume with settings that differ from the saved run's, unless --allow-changes;
    an accepted change joins ``args.resumed_with_changes`` (config.json, the next checkpoints):
    where it took effect and each setting's [saved, new] value.
    """
    history = list(saved.get("resumed_with_changes") or [])
    changes = differences(saved.get("settings") or {}, run_settings(args))
    if changes and not args.allow_changes:
        raise UsageError(
            f"--resume: {latest} was trained with other settings: {describe(changes)}; give the "
            "saved values, or add --allow-changes to continue with these (recorded in "
            "config.json)"
        )
    if changes:
        progress = EpochProgress.from_dict(saved.get("epoch_progress"))
        history.append(
            {
                "epoch": int(saved["epoch"]) + 1,
                "batch": progress.batches_done + 1,
                "changes": changes,
            }
        )
    args.resumed_with_changes = history
    return changes


def stop_agreed(backend: Backend, stop: StopSignals) -> bool:
    """Whether any process was told to stop (a collective of its own, between steps)."""
    return stop.join(backend.all_reduce_sum([float(stop.received or 0)])[0])


def save_and_stop(
    backend: Backend,
    args: argparse.Namespace,
    stop: StopSignals,
    epoch: int,
    best: float,
    state: EpochProgress,
    at: str,
) -> NoReturn:
    """Save the resumable state (rank 0), wait for every process, and end the run with one line
    naming the checkpoint (RunStoppedError, exit status 128 + signal).
    """
    from core.serialization import write_checkpoint

    latest = latest_path(args, backend)
    if backend.rank == 0:
        write_checkpoint(checkpoint_payload(backend, args, epoch, best, state), latest)
    backend.barrier()  # a launcher stops every process once one exits: let the save finish
    raise RunStoppedError(
        f"stopped by {stop.name} {at}: saved {latest}; continue with --resume",
        stop.exit_code,
    )
