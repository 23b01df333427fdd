"""Convert OverLoCK weights between PyTorch (.pth/.pt) and Jittor (.pkl) by the file extensions.

    python -m models.convert SRC DST [--model overlock_xt] [--num-classes 1000]

SRC may be a plain state dict or one wrapped in 'state_dict' / 'model' (official, timm and this
project's training checkpoints). The weights are checked against the architecture (given with
--model, otherwise recognised from the keys and shapes): unknown or missing keys and shape
mismatches are listed in one error and nothing is written. Values are copied bit for bit, so
torch -> jittor -> torch gives back the identical state dict.

The Jittor format is Jittor's own (``jt.save``/``jt.load``): a pickled dict of numpy arrays with a
SHA-1 trailer. It is read and written here without importing Jittor.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from utils.files import atomic_write

TORCH_SUFFIXES = (".pth", ".pt")
JITTOR_SUFFIXES = (".pkl",)
WRAPPER_KEYS = ("state_dict", "model")
_JITTOR_TRAILER = b"HCAJSLHD"  # what jt.save appends after the SHA-1 of the pickle

BASE_VARIANTS = ("overlock_xxt", "overlock_xt", "overlock_t", "overlock_s", "overlock_b")
VARIANTS = BASE_VARIANTS + tuple(f"{name}_reparam" for name in BASE_VARIANTS)

StateDict = dict[str, np.ndarray]


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit the model; the message says why."""


def _suffix(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in TORCH_SUFFIXES + JITTOR_SUFFIXES:
        raise CheckpointError(
            f"{path}: unknown extension {suffix!r}; use .pth/.pt for PyTorch or .pkl for Jittor"
        )
    return suffix


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


def _to_numpy_tree(obj: object) -> object:
    if hasattr(obj, "detach"):  # torch.Tensor
        return obj.detach().cpu().numpy()
    if isinstance(obj, Mapping):
        return {key: _to_numpy_tree(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_numpy_tree(value) for value in obj)
    return obj


def read_checkpoint(path: str | os.PathLike) -> object:
    """Read a PyTorch (.pth/.pt) or Jittor (.pkl) file; tensors come back as numpy arrays."""
    suffix = _suffix(path)
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        if suffix in TORCH_SUFFIXES:
            import torch

            return _to_numpy_tree(torch.load(path, map_location="cpu", weights_only=True))
        data = Path(path).read_bytes()
        if data.endswith(_JITTOR_TRAILER):
            body, digest = data[:-28], data[-28:-8]
            if hashlib.sha1(body).digest() != digest:
                raise CheckpointError(f"{path}: checksum mismatch, the file is corrupt")
            data = body
        return pickle.loads(data)
    except CheckpointError:
        raise
    except Exception as err:  # unpickling errors have many types and long messages
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from err


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


def _to_torch_tree(obj: object) -> object:
    import torch

    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, Mapping):
        return {key: _to_torch_tree(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_torch_tree(value) for value in obj)
    return obj


def write_checkpoint(obj: object, path: str | os.PathLike) -> None:
    """Write nested dicts of numpy arrays as .pth (arrays become tensors) or .pkl, atomically."""
    suffix = _suffix(path)
    if suffix in TORCH_SUFFIXES:
        import torch

        tree = _to_torch_tree(obj)
        atomic_write(path, lambda handle: torch.save(tree, handle))
    else:
        body = pickle.dumps(obj, 4)
        atomic_write(
            path, lambda handle: handle.write(body + hashlib.sha1(body).digest() + _JITTOR_TRAILER)
        )


def save_state_dict(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write numpy weights as a PyTorch (.pth/.pt) or Jittor (.pkl) state dict, atomically."""
    write_checkpoint({key: np.asarray(value) for key, value in state.items()}, path)


def expected_shapes(model: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a model's state dict, built on torch's meta device (no memory used)."""
    import torch

    from models import overlock_torch

    if model not in VARIANTS:
        raise CheckpointError(f"unknown model {model!r}; choose one of {', '.join(VARIANTS)}")
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
    _suffix(dst)
    if Path(src).resolve() == Path(dst).resolve():
        raise CheckpointError("SRC and DST are the same file")
    if not Path(dst).parent.is_dir():
        raise CheckpointError(f"{dst}: folder {Path(dst).parent} does not exist")
    state = load_state_dict(src)
    name, classes = check_state(state, model, num_classes)
    save_state_dict(state, dst)
    return name, classes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.convert",
        description="Convert OverLoCK weights between PyTorch (.pth/.pt) and Jittor (.pkl); "
        "the direction follows the file extensions.",
    )
    parser.add_argument("src", help="checkpoint to read (.pth/.pt or .pkl)")
    parser.add_argument("dst", help="file to write (.pth/.pt or .pkl)")
    parser.add_argument(
        "--model", choices=VARIANTS, help="architecture to check against (default: recognised)"
    )
    parser.add_argument(
        "--num-classes", type=int, help="classifier width (default: read from the weights)"
    )
    args = parser.parse_args(argv)
    try:
        name, classes = convert(args.src, args.dst, args.model, args.num_classes)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst} ({name}, {classes} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
