"""How every analysis writes its results: the figures' size and font, PNG, NumPy archives, and
the output folder, each file written atomically (a reader never sees half a file).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import UsageError
from core.files import atomic_write_bytes

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.figure import Figure

DPI = 150
FONT_SIZE = 10  # points; titles and labels stay >= 9 pt at report size


def make_parent(path: Path) -> None:
    """Create the folder an output goes to; failing is a one-line UsageError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create {path.parent} for {path.name} ({err.strerror})") from err


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> None:
    """Render to PNG in memory, then write atomically."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez`` of ``arrays`` in memory, then written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
