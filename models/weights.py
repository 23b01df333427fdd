"""OverLoCK state dicts as numpy arrays: read from a checkpoint of either framework, put in the
official (PyTorch) layout, and checked against the architecture of a variant.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import CheckpointError, UsageError
from core.files import check_writable_folder
from core.serialization import checkpoint_suffix, read_checkpoint, write_checkpoint
from models.variants import ALL_MODEL_NAMES, variant_of

WRAPPER_KEYS = ("state_dict", "model")
VARIANTS = ALL_MODEL_NAMES  # the model names a state dict is checked against (--model choices)

StateDict = dict[str, np.ndarray]
EXAMPLE_KEYS = 3  # keys named per kind of problem; the counts say how many there are


def _unwrap(obj: object, path: str | os.PathLike) -> Mapping:
    for key in WRAPPER_KEYS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: not a state dict (found {type(obj).__name__})")
    return obj


def _to_numpy(value: object, key: str, path: str | os.PathLike) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy"):  # jittor.Var saved without conversion
        return np.asarray(value.numpy())
    if isinstance(value, np.ndarray | np.generic | int | float):
        return np.asarray(value)
    raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not an array")


def canonical_state(state: Mapping[str, np.ndarray]) -> StateDict:
    """The official (PyTorch) layout of a state dict: Jittor has no 0-d Vars and keeps BatchNorm's
    ``num_batches_tracked`` as shape (1,); here it becomes 0-d, the same value."""
    return {
        key: value.reshape(()) if key.endswith("num_batches_tracked") and value.size == 1 else value
        for key, value in state.items()
    }


def load_state_dict(path: str | os.PathLike) -> StateDict:
    """Read the model weights of a PyTorch or Jittor checkpoint as numpy arrays (torch layout)."""
    return state_dict_of(read_checkpoint(path), path)


def state_dict_of(obj: object, path: str | os.PathLike) -> StateDict:
    """The model weights in ``obj``, a checkpoint already read from ``path`` (for messages)."""
    state = _unwrap(obj, path)
    return canonical_state({str(key): _to_numpy(value, key, path) for key, value in state.items()})


def save_state_dict(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write numpy weights as a PyTorch (.pth/.pt) or Jittor (.pkl) state dict, atomically."""
    write_checkpoint({key: np.asarray(value) for key, value in state.items()}, path)


def expected_shapes(model: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a model's state dict, built on torch's meta device (no memory used)."""
    import torch

    from models import overlock_torch

    try:
        variant_of(model)
    except KeyError as err:
        raise CheckpointError(err.args[0]) from None
    with torch.device("meta"):
        net = getattr(overlock_torch, model)(num_classes=num_classes)
    return {key: tuple(value.shape) for key, value in net.state_dict().items()}


@dataclass(frozen=True)
class StateMismatch:
    """How a state dict differs from a model's: keys it lacks, keys it has in excess, and keys
    whose shapes differ ("key (state shape) vs model (model shape)")."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]

    @property
    def count(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

    def describe(self, examples: int = EXAMPLE_KEYS) -> list[str]:
        """One string per kind found: its count and the first ``examples`` keys."""
        problems = []
        for label, plural, items, sep in (
            ("missing key", "s", self.missing, ", "),
            ("unexpected key", "s", self.unexpected, ", "),
            ("shape mismatch", "es", self.mismatched, "; "),
        ):
            if items:
                label += plural if len(items) > 1 else ""
                more = f"{sep}... ({len(items) - examples} more)" if len(items) > examples else ""
                problems.append(f"{len(items)} {label}: {sep.join(items[:examples])}{more}")
        return problems


def compare_state(state: Mapping[str, np.ndarray], expected: Mapping[str, tuple]) -> StateMismatch:
    """How ``state`` differs from the key -> shape table ``expected`` (in the table's order)."""
    return StateMismatch(
        missing=[key for key in expected if key not in state],
        unexpected=[key for key in state if key not in expected],
        mismatched=[
            f"{key} {tuple(state[key].shape)} vs model {tuple(expected[key])}"
            for key in expected
            if key in state and tuple(state[key].shape) != tuple(expected[key])
        ],
    )


def num_classes_of(state: Mapping[str, np.ndarray]) -> int:
    """The classifier width of an OverLoCK state dict (last conv of the main head)."""
    head = state.get("head.4.weight")
    return int(head.shape[0]) if head is not None else 0


def training_model_flag(model_name: str) -> str | None:
    """The training scripts' --model value naming ``model_name`` ("overlock_xt" -> "xt");
    None for a deploy form, which they do not train."""
    variant, deploy = variant_of(model_name)
    return None if deploy else variant.name


def _fit_hint(
    state: Mapping[str, np.ndarray],
    model: str | None,
    num_classes: int,
    tried: Collection[str],
    model_flag: Callable[[str], str | None],
) -> str:
    """The end of check_state's message when the weights fit a model other than ``model``
    with ``num_classes`` classes (``tried``: the names already found not to), or with their own
    classifier width: "; they fit overlock_xt: pass --model xt". Empty when none fits."""
    for classes in dict.fromkeys(c for c in (num_classes, num_classes_of(state)) if c > 0):
        for name in VARIANTS:
            if classes == num_classes and name in tried:
                continue
            if compare_state(state, expected_shapes(name, classes)).count:
                continue
            flags = []
            if model is not None and name != model:
                value = model_flag(name)
                if value is None:
                    return f"; they are {name} weights, which this command does not take"
                flags.append(f"--model {value}")
            if classes != num_classes:
                flags.append(f"--num-classes {classes}")
            fits = name if classes == num_classes else f"{name} with {classes} classes"
            return f"; they fit {fits}: pass {' '.join(flags)}"
    return ""


def check_state(
    state: Mapping[str, np.ndarray],
    model: str | None = None,
    num_classes: int | None = None,
    model_flag: Callable[[str], str | None] = training_model_flag,
) -> tuple[str, int]:
    """Check weights against a model (recognised from the keys when not given).

    Returns (model name, num_classes); raises CheckpointError with the counts of missing,
    unexpected and mis-shaped keys and a few of each, and, when the weights fit another model
    or classifier width, the flags that choose it (``model_flag``: a model name -> the value of
    --model that names it, None if the command cannot build it).
    """
    if num_classes is None:
        num_classes = num_classes_of(state)
    candidates = [model] if model else list(VARIANTS)
    best: tuple[StateMismatch, str] | None = None
    for name in candidates:
        mismatch = compare_state(state, expected_shapes(name, num_classes))
        if not mismatch.count:
            return name, num_classes
        if best is None or mismatch.count < best[0].count:
            best = (mismatch, name)
    assert best is not None
    mismatch, name = best
    hint = _fit_hint(state, model, num_classes, candidates, model_flag)
    raise CheckpointError(
        f"weights do not fit {name} (num_classes={num_classes}): "
        + " | ".join(mismatch.describe())
        + hint
    )


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    model: str | None = None,
    num_classes: int | None = None,
) -> tuple[str, int]:
    """Convert SRC to DST (formats by extension) after checking it fits the model.

    Every value and the destination folder are checked before SRC is read (UsageError or
    CheckpointError); a failed write (a full disk) is an OSError naming DST. Nothing is written
    unless the whole file is.
    """
    if num_classes is not None and num_classes < 1:
        raise UsageError(f"--num-classes must be at least 1 (got {num_classes})")
    checkpoint_suffix(src)
    checkpoint_suffix(dst)
    if Path(src).resolve() == Path(dst).resolve():
        raise CheckpointError("SRC and DST are the same file")
    if Path(dst).is_dir():
        raise UsageError(
            f"DST {dst} is a folder; give the file to write, e.g. {Path(dst) / 'w.pkl'}"
        )
    if not Path(dst).parent.is_dir():
        raise CheckpointError(f"{dst}: folder {Path(dst).parent} does not exist")
    check_writable_folder(Path(dst).parent, f"DST {dst}")
    state = load_state_dict(src)
    try:  # this command's --model takes the full names: "overlock_xt", "overlock_xt_reparam"
        name, classes = check_state(state, model, num_classes, model_flag=lambda name: name)
    except CheckpointError as err:
        raise CheckpointError(f"{src}: {err}") from None
    save_state_dict(state, dst)
    return name, classes
