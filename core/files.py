"""Atomic file writes: a crash or a kill leaves the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from core.errors import UsageError


def _temporary_prefix(path: Path, pid: int) -> str:
    return f".{path.name}.{pid}."


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers of ``path`` killed mid-write (SIGKILL, power
    loss) left beside it; a temporary file of a live process stays. Returns those removed."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _staged(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """A synced temporary file beside ``path`` holding what ``write(handle)`` wrote (its name
    carries this process's id, for ``remove_stale_temporaries``). An OSError names ``path``."""
    try:
        remove_stale_temporaries(path)
        fd, name = tempfile.mkstemp(
            prefix=_temporary_prefix(path, os.getpid()), suffix=".tmp", dir=path.parent
        )
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from err
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give a new file's usual permissions
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        Path(name).unlink(missing_ok=True)
        raise OSError(err.errno or errno.EIO, err.strerror or str(err), str(path)) from err
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync it, then rename it.

    An OSError (no space, no permission) names ``path``, not the hidden temporary file.
    """
    atomic_write_all({Path(path): write})


def atomic_write_all(files: Mapping[Path, Callable[[BinaryIO], object] | bytes]) -> None:
    """Write every file of one result or none of them: each goes to a synced temporary file
    beside it first, and the renames follow only once all are written (a full disk or a
    read-only folder leaves the previous files as they were). Values are bytes or
    ``write(handle)`` functions; an OSError names the destination that failed."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, content in files.items():
            write = content if callable(content) else _writer(content)
            staged.append((_staged(Path(path), write), Path(path)))
        for tmp, path in staged:
            try:
                os.replace(tmp, path)
            except OSError as err:
                raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def _writer(data: bytes) -> Callable[[BinaryIO], object]:
    return lambda handle: handle.write(data)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda handle: handle.write(data))


def check_writable_folder(folder: str | os.PathLike, what: str) -> Path:
    """Create ``folder`` if needed and prove a file can be written there, before any work is
    spent; ``what`` names it for the user (e.g. "--out logs/x"). Raises UsageError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UsageError(
            f"{what}: folder {folder} is not writable ({err.strerror}); choose another one"
        ) from err
    return folder
