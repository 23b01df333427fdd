"""Checkpoint files of either framework: PyTorch's (.pth/.pt, ``torch.save``) and Jittor's (.pkl,
``jt.save``: a pickled dict of numpy arrays with a SHA-1 trailer, read and written here without
importing Jittor). Tensors come back as numpy arrays; every write is atomic.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from core.errors import CheckpointError
from core.files import atomic_write

TORCH_SUFFIXES = (".pth", ".pt")
JITTOR_SUFFIXES = (".pkl",)
_JITTOR_TRAILER = b"HCAJSLHD"  # what jt.save appends after the SHA-1 of the pickle


def checkpoint_suffix(path: str | os.PathLike) -> str:
    """The extension of a checkpoint path, checked: .pth/.pt (PyTorch) or .pkl (Jittor)."""
    suffix = Path(path).suffix.lower()
    if suffix not in TORCH_SUFFIXES + JITTOR_SUFFIXES:
        raise CheckpointError(
            f"{path}: unknown extension {suffix!r}; use .pth/.pt for PyTorch or .pkl for Jittor"
        )
    return suffix


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
    suffix = checkpoint_suffix(path)
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
    suffix = checkpoint_suffix(path)
    if suffix in TORCH_SUFFIXES:
        import torch

        # Serialised in memory first: torch.save reports a failed file write (a full disk) as a
        # RuntimeError from its zip writer; a plain write raises OSError with the errno.
        buffer = io.BytesIO()
        torch.save(_to_torch_tree(obj), buffer)
        atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))
    else:
        body = pickle.dumps(obj, 4)
        atomic_write(
            path, lambda handle: handle.write(body + hashlib.sha1(body).digest() + _JITTOR_TRAILER)
        )
