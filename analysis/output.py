"""How every analysis writes its results: the figures' size and font, PNG, NumPy archives, the
output folders (checked before the work), and the files of one result, written all or none.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import UsageError
from core.files import check_writable_folder, remove_stale_temporaries

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.figure import Figure

DPI = 150
FONT_SIZE = 10  # points; titles and labels stay >= 9 pt at report size


def check_output(path: Path, flag: str) -> None:
    """Before any work: ``path`` (the value of ``flag``) names a file whose folder exists or can
    be made and takes a file; otherwise a one-line UsageError."""
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name, e.g. {path / 'out'}")
    check_writable_folder(path.parent, f"{flag} {path}")


def figure_png(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure rendered as PNG (and closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """What ``np.savez`` writes for ``arrays``."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _staged(path: Path, data: bytes) -> Path:
    """``data`` in a synced temporary file beside ``path`` (named as ``core.files`` names its
    own, so a killed run's leftovers are removed the same way). An OSError names ``path``."""
    remove_stale_temporaries(path)
    try:
        fd, name = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
        )
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from err
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give a new file's usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        Path(name).unlink(missing_ok=True)
        raise OSError(err.errno or errno.EIO, err.strerror or str(err), str(path)) from err
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def write_together(files: Mapping[Path, bytes]) -> None:
    """Write every file of one result or none of them: each goes to a synced temporary file
    beside it first, and the renames follow only once all are written (a full disk or a
    read-only folder leaves the previous files as they were). An OSError names the destination
    that failed; the temporaries are removed."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            staged.append((_staged(Path(path), data), Path(path)))
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
