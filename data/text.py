"""The datasets' text files (``wnids.txt``, ``words.txt``, ``val_annotations.txt``), read as UTF-8.

Files that name classes or images (``read_lines``) must decode: an undecodable byte there would
name a folder or a file that does not exist, so it is a ``DatasetError`` naming the file, the line
and the column. Files that only give display names (``read_display_lines``) are read tolerantly:
an undecodable byte becomes U+FFFD and the run goes on. A leading UTF-8 byte-order mark (as some
Windows editors write) is dropped in both cases.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from data.images import DatasetError


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return data[len(codecs.BOM_UTF8) :] if data.startswith(codecs.BOM_UTF8) else data


def read_lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of ``path``, stripped, with their 1-based line numbers.

    Raises ``DatasetError`` (one line: file, line, column, the byte, what to do) if ``path`` is
    not UTF-8 text.
    """
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8")  # valid: exc.start is the first bad byte
        lines = (before + "x").splitlines()  # "x" stands for the line holding the bad byte
        raise DatasetError(
            f"{path}:{len(lines)}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column "
            f"{len(lines[-1])}); save the file as UTF-8 (its names must match the files and "
            "folders of the dataset)"
        ) from None
    numbered = enumerate(text.splitlines(), 1)
    return [(lineno, line.strip()) for lineno, line in numbered if line.strip()]


def read_display_lines(path: Path) -> list[str]:
    """Every line of ``path``; undecodable bytes become U+FFFD (display names only)."""
    return _read_bytes(path).decode("utf-8", errors="replace").splitlines()
