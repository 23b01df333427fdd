"""Checkpoint files of either framework: PyTorch's (.pth/.pt, ``torch.save``) and Jittor's (.pkl,
``jt.save``: a pickled dict of numpy arrays with a SHA-1 trailer, read and written here without
importing Jittor). Tensors come back as numpy arrays; every write is atomic.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from core.errors import CheckpointError
from core.files import atomic_write

TORCH_SUFFIXES = (".pth", ".pt")
JITTOR_SUFFIXES = (".pkl",)
_JITTOR_TRAILER = b"HCAJSLHD"  # what jt.save appends after the SHA-1 of the pickle
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE_MAGIC = b"\x80"  # pickle protocol 2 and later (jt.save writes protocol 4)
# torch.save before PyTorch 1.6: a pickle whose first object is this magic number
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_HEAD_BYTES = 64


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
    if Path(path).is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file")
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        if suffix in TORCH_SUFFIXES:
            import torch

            with warnings.catch_warnings():  # a plain pickle is reported below, in one line
                warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
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
        raise _unreadable(path, suffix, err) from err


def describe_start(head: bytes) -> str:
    """What a file whose first bytes are ``head`` looks like, for a message: "the file is
    empty", "a zip archive", "a Python pickle", "starts with text '...'", or its first bytes."""
    if not head:
        return "the file is empty"
    if head.startswith(_ZIP_MAGIC):
        return "a zip archive"
    if head.startswith(_PICKLE_MAGIC):
        return "a Python pickle"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip archive"
    text = _leading_text(head)
    if text is None:
        return "starts with bytes " + head[:8].hex(" ")
    if text.startswith("version https://git-lfs"):
        return "a Git LFS pointer, not the file itself; run git lfs pull"
    if text.lstrip().lower().startswith(("<!doctype html", "<html")):
        return "an HTML page; a failed download?"
    first_line = (text.strip().splitlines() or [text])[0]
    return f"starts with text {first_line[:40]!r}"


def _leading_text(head: bytes) -> str | None:
    """``head`` as text when it reads as text: printable UTF-8 (a character may be cut at the
    end), or mostly printable ASCII in another encoding (undecodable bytes replaced)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start >= len(head) - 3:
            text = head[: err.start].decode("utf-8")
        else:
            ascii_text = sum(32 <= b < 127 or b in b"\t\r\n" for b in head)
            if ascii_text < 0.8 * len(head):
                return None
            text = head.decode("ascii", errors="replace")
    printable = all(c.isprintable() or c in "\t\r\n" for c in text)
    return text if text and printable else None


def _unreadable(path: str | os.PathLike, suffix: str, err: Exception) -> CheckpointError:
    """The one-line error for a file that the reader of its extension could not read."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - len(_JITTOR_TRAILER)))
            tail = handle.read()
    except OSError as read_err:
        return CheckpointError(f"{path}: not a readable checkpoint ({read_err.strerror})")
    torch_file = suffix in TORCH_SUFFIXES
    expected = (_ZIP_MAGIC, _LEGACY_TORCH_MAGIC) if torch_file else (_PICKLE_MAGIC,)
    found = describe_start(head)
    if head.startswith(expected):  # the right kind of file, damaged (cut short, overwritten)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        return CheckpointError(
            f"{path}: not a readable checkpoint ({found} that cannot be read: {reason}); "
            "the file may be truncated or corrupt"
        )
    framework, hint = "PyTorch" if torch_file else "Jittor", ""
    if torch_file and head.startswith(_PICKLE_MAGIC) and tail == _JITTOR_TRAILER:
        hint = "; it is a Jittor checkpoint: name it .pkl"
    elif not torch_file and head.startswith(_ZIP_MAGIC):
        hint = "; a PyTorch checkpoint? then name it .pth"
    return CheckpointError(
        f"{path}: not a readable checkpoint: not a {framework} checkpoint ({found}){hint}"
    )


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
