"""OverLoCK state dicts as numpy arrays: read from a checkpoint of either framework, put in the
official (PyTorch) layout, and checked against the architecture of a variant.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from core.errors import CheckpointError
from core.serialization import checkpoint_suffix, read_checkpoint, write_checkpoint
from models.variants import ALL_MODEL_NAMES, variant_of

WRAPPER_KEYS = ("state_dict", "model")
VARIANTS = ALL_MODEL_NAMES  # the model names a state dict is checked against (--model choices)

StateDict = dict[str, np.ndarray]


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


def state_problems(state: Mapping[str, np.ndarray], expected: Mapping[str, tuple]) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches, one string per kind found."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs model {tuple(expected[key])}"
        for key in expected
        if key in state and tuple(state[key].shape) != tuple(expected[key])
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected)):
        if items:
            problems.append(f"{len(items)} {label} keys: {', '.join(items)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {'; '.join(mismatched)}")
    return problems


def num_classes_of(state: Mapping[str, np.ndarray]) -> int:
    """The classifier width of an OverLoCK state dict (last conv of the main head)."""
    head = state.get("head.4.weight")
    return int(head.shape[0]) if head is not None else 0


def check_state(
    state: Mapping[str, np.ndarray], model: str | None = None, num_classes: int | None = None
) -> tuple[str, int]:
    """Check weights against a model (recognised from the keys when not given).

    Returns (model name, num_classes); raises CheckpointError listing every problem.
    """
    if num_classes is None:
        num_classes = num_classes_of(state)
    candidates = [model] if model else list(VARIANTS)
    best: tuple[int, str, list[str]] | None = None
    for name in candidates:
        problems = state_problems(state, expected_shapes(name, num_classes))
        if not problems:
            return name, num_classes
        score = sum(len(p) for p in problems)
        if best is None or score < best[0]:
            best = (score, name, problems)
    assert best is not None
    raise CheckpointError(
        f"weights do not fit {best[1]} (num_classes={num_classes}): " + " | ".join(best[2])
    )


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    model: str | None = None,
    num_classes: int | None = None,
) -> tuple[str, int]:
    """Convert SRC to DST (formats by extension) after checking it fits the model."""
    checkpoint_suffix(dst)
    if Path(src).resolve() == Path(dst).resolve():
        raise CheckpointError("SRC and DST are the same file")
    if not Path(dst).parent.is_dir():
        raise CheckpointError(f"{dst}: folder {Path(dst).parent} does not exist")
    state = load_state_dict(src)
    name, classes = check_state(state, model, num_classes)
    save_state_dict(state, dst)
    return name, classes
