"""TinyImageNet-N: the standard TinyImageNet folder layout, read with numpy + Pillow only.

Layout (the original 200-class 64x64 release and its downscaled mirrors alike)::

    wnids.txt                                 one wnid per line (any order)
    words.txt                                 optional: wnid <TAB> human-readable name
    train/<wnid>/images/<wnid>_<k>.JPEG       training images
    val/images/val_<k>.JPEG                   validation images
    val/val_annotations.txt                   file <TAB> wnid [<TAB> box...]
    test/                                     ignored

Selection rules (they fix what every framework sees, so keep them stable):

- classes: the first ``num_classes`` wnids in sorted order; class index = position in that list;
- files: sorted in natural order (``_2`` before ``_10``), then the first ``max_per_class`` of
  each class (defaults: 500 train, 50 val); val keeps its natural file order overall;
- val annotations of a wnid that ``wnids.txt`` does not list are skipped with one
  ``DataWarning``.

The text files are UTF-8 (``data.text``): an undecodable byte in ``wnids.txt`` or
``val_annotations.txt`` is a ``DatasetError`` naming the line; in ``words.txt`` (display names
only) it becomes U+FFFD.

Transform of one image (``TinyImageNet.load`` = ``data.images.decode_image``): decode, convert
to RGB (grayscale, CMYK, palette and alpha images alike), resize to ``img_size`` x ``img_size``
with Pillow's bilinear filter (``data.images.RESAMPLE``; antialiased when shrinking, plain
bilinear with half-pixel centres when enlarging, e.g. the 32px mirror to 64px), as an
H x W x 3 uint8 array. The random flip and the
normalisation (``data.images.normalize``) are applied per batch by ``data.loader``.
"""

from __future__ import annotations

import collections
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from data.images import DatasetError, DataWarning, decode_image, image_names, natural_key
from data.text import read_display_lines, read_lines

DEFAULT_CAPS = {"train": 500, "val": 50}
_LAYOUT_HINT = "expected a TinyImageNet folder (wnids.txt, train/<wnid>/images/, val/)"


def _read_lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise DatasetError(f"{path.name} not found: {path}; {_LAYOUT_HINT}")
    return read_lines(path)


def read_wnids(root: Path) -> list[str]:
    """Every wnid of ``root/wnids.txt``, sorted, without repeats."""
    return sorted({line for _, line in _read_lines(root / "wnids.txt")})


def select_wnids(root: Path, num_classes: int) -> list[str]:
    """The first ``num_classes`` wnids of ``root/wnids.txt`` in sorted order."""
    wnids = read_wnids(root)
    if num_classes < 1:
        raise DatasetError(f"num_classes must be >= 1, got {num_classes}")
    if len(wnids) < num_classes:
        raise DatasetError(
            f"asked for {num_classes} classes but {root / 'wnids.txt'} lists only {len(wnids)}; "
            f"use num_classes <= {len(wnids)} or a bigger dataset"
        )
    return wnids[:num_classes]


def _train_files(root: Path, wnids: Sequence[str], cap: int) -> list[tuple[str, int]]:
    samples = []
    for label, wnid in enumerate(wnids):
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise DatasetError(f"training folder not found: {folder}; {_LAYOUT_HINT}")
        names = image_names(folder)
        if not names:
            raise DatasetError(f"no images (.JPEG/.jpg/.png) in {folder}")
        samples += [(str(folder / name), label) for name in names[:cap]]
    return samples


def _val_rows(root: Path, wnids: Sequence[str]) -> list[tuple[str, int]]:
    """(file name, label) of the annotations of the chosen classes, in natural file order; one
    ``DataWarning`` for the annotations whose wnid ``wnids.txt`` does not list (skipped)."""
    ann = root / "val" / "val_annotations.txt"
    label_of = {wnid: i for i, wnid in enumerate(wnids)}
    listed = set(read_wnids(root))
    rows, unlisted = [], collections.Counter()
    for lineno, line in _read_lines(ann):
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2:
            raise DatasetError(f"{ann}:{lineno}: expected 'file<TAB>wnid[...]', got {line!r}")
        if fields[1] in label_of:
            rows.append((fields[0], label_of[fields[1]]))
        elif fields[1] not in listed:
            unlisted[fields[1]] += 1
    if unlisted:
        few = ", ".join(sorted(unlisted)[:3]) + (", ..." if len(unlisted) > 3 else "")
        count, kinds = unlisted.total(), len(unlisted)
        warnings.warn(
            f"{ann}: skipping {count} annotation{'s' * (count > 1)} of {kinds} "
            f"wnid{'s' * (kinds > 1)} that {root / 'wnids.txt'} does not list ({few})",
            DataWarning,
            stacklevel=4,
        )
    return sorted(rows, key=lambda row: natural_key(row[0]))


def _val_files(root: Path, wnids: Sequence[str], cap: int) -> list[tuple[str, int]]:
    ann = root / "val" / "val_annotations.txt"
    taken = [0] * len(wnids)
    samples = []
    for name, label in _val_rows(root, wnids):
        if taken[label] < cap:
            taken[label] += 1
            samples.append((str(root / "val" / "images" / name), label))
    if 0 in taken:
        raise DatasetError(f"{ann} lists no images for class {wnids[taken.index(0)]}")
    missing = next((p for p, _ in samples if not Path(p).is_file()), None)
    if missing is not None:
        raise DatasetError(f"validation image listed in {ann} not found: {missing}")
    return samples


def _class_names(root: Path, wnids: Sequence[str]) -> list[str]:
    names = {}
    words = root / "words.txt"
    if words.is_file():  # optional and only for display: undecodable bytes become U+FFFD
        for line in read_display_lines(words):
            wnid, _, name = line.partition("\t")
            names[wnid.strip()] = name.strip()
    return [names.get(wnid) or wnid for wnid in wnids]


class TinyImageNet:
    """One split of TinyImageNet-N: file list, labels and per-image decoding.

    Args:
        root: folder in the TinyImageNet layout (see the module docstring).
        split: ``"train"`` or ``"val"``.
        num_classes: N, the first N wnids in sorted order (20 for TinyImageNet-20, up to 200).
        max_per_class: cap on images per class; ``None`` = 500 for train, 50 for val.
        img_size: output side in pixels (images are resized to a square).

    Raises ``DatasetError`` with a one-line message if the layout is wrong.
    """

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val"] = "train",
        num_classes: int = 20,
        max_per_class: int | None = None,
        img_size: int = 64,
    ) -> None:
        if split not in DEFAULT_CAPS:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder not found: {self.root}; {_LAYOUT_HINT}")
        self.split = split
        self.img_size = int(img_size)
        self.max_per_class = DEFAULT_CAPS[split] if max_per_class is None else int(max_per_class)
        if self.max_per_class < 1 or self.img_size < 1:
            raise ValueError("max_per_class and img_size must be >= 1")
        self.wnids = select_wnids(self.root, num_classes)
        self.num_classes = len(self.wnids)
        self.class_names = _class_names(self.root, self.wnids)
        reader = _train_files if split == "train" else _val_files
        samples = reader(self.root, self.wnids, self.max_per_class)
        self.paths: list[str] = [path for path, _ in samples]
        self.labels: np.ndarray = np.array([label for _, label in samples], dtype=np.int64)

    @property
    def train(self) -> bool:
        """True for the training split (shuffle + flip by default in the loader)."""
        return self.split == "train"

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> np.ndarray:
        """Image ``index`` as ``img_size`` x ``img_size`` x 3 uint8 RGB (no flip, no normalisation).

        Raises ``CorruptImageError`` if the file cannot be decoded.
        """
        return decode_image(self.paths[index], self.img_size)

    def __repr__(self) -> str:
        return (
            f"TinyImageNet({str(self.root)!r}, split={self.split!r}, classes={self.num_classes}, "
            f"images={len(self)}, img_size={self.img_size})"
        )
