"""How every analysis writes its results: the figures' size and font, PNG, NumPy archives, the
output folders (checked before the work), and the files of one result, written all or none.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import UsageError
from core.files import atomic_write_all, check_writable_folder

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


def write_together(files: Mapping[Path, bytes]) -> None:
    """Write every file of one result or none of them (``core.files.atomic_write_all``)."""
    atomic_write_all(files)
