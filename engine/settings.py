"""The settings that give a training run its meaning, saved in every training checkpoint, so
that ``--resume`` can refuse to continue a run with other ones (unless ``--allow-changes`` says
the change is intended; each accepted change is recorded in the checkpoint and in config.json).

Not among them: ``--epochs`` (extending a run is what --resume is for), the model and its
classes (checked on their own: the weights would not fit), and what leaves the numbers alone
or within float round-off (workers, cache, device, output folder, --grad-checkpoint, --compile).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# args attribute -> its flag. "dataset" is the resolved data folder (--data, or the generated
# default); "base_lr" is --lr as given (with --auto-lr the rate then scales with the batch).
RUN_SETTINGS = {
    "dataset": "--data",
    "train_per_class": "--train-per-class",
    "val_per_class": "--val-per-class",
    "img_size": "--img-size",
    "crop_pct": "--crop-pct",
    "batch_size": "--batch-size",
    "seed": "--seed",
    "base_lr": "--lr",
    "auto_lr": "--auto-lr",
    "weight_decay": "--weight-decay",
    "decay_1d": "--decay-1d",
    "aux_weight": "--aux-weight",
    "sched": "--sched",
    "warmup_epochs": "--warmup-epochs",
    "warmup_lr": "--warmup-lr",
    "min_lr": "--min-lr",
    "cooldown_epochs": "--cooldown-epochs",
    "drop_path": "--drop-path",
    "ema_decay": "--ema-decay",
    "clip_grad": "--clip-grad",
    "amp": "--amp",
    "smoothing": "--smoothing",
    "mixup": "--mixup",
    "cutmix": "--cutmix",
    "mix_prob": "--mix-prob",
    "switch_prob": "--switch-prob",
    "random_resized_crop": "--random-resized-crop",
    "aa": "--aa",
    "train_interpolation": "--train-interpolation",
    "reprob": "--reprob",
    "sync_bn": "--sync-bn",
    "max_batches": "--max-batches",
}


def _plain(value: Any) -> Any:
    """A value every checkpoint format stores as it is: tuples as lists, paths as text."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """This run's ``RUN_SETTINGS`` values (``args.dataset`` set once the data is found)."""
    return {name: _plain(getattr(args, name)) for name in RUN_SETTINGS}


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{setting: [saved value, current value]} where they differ; a setting that one side does
    not know (a checkpoint of an older version) is not compared."""
    return {
        name: [saved[name], current[name]]
        for name in RUN_SETTINGS
        if name in saved and name in current and _plain(saved[name]) != _plain(current[name])
    }


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(map(str, value))
    if value is None:
        return "none (all)"
    return str(value) if value != "" else '""'


def describe(changes: Mapping[str, list[Any]]) -> str:
    """``--batch-size 4 (saved 8), --seed 1 (saved 0)``: each change, as the user typed it."""
    return ", ".join(
        f"{RUN_SETTINGS[name]} {_show(now)} (saved {_show(old)})"
        for name, (old, now) in changes.items()
    )
