"""The layout dispatch: which reader a dataset folder needs, and opening a split with it.

Two layouts are served: TinyImageNet (``wnids.txt``, ``data.tinyimagenet``) and ImageNet
(``train/<class>/``, ``val/<class>/``, ``data.imagenet``). ``open_dataset`` detects the layout so
a training or evaluation script accepts either folder; both readers give a ``Dataset`` with the
same interface (``paths``, ``labels``, ``num_classes``, ``class_names``, ``split``, ``train``,
``img_size``, ``len``, ``load``), which ``data.loader.BatchLoader`` serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from data.imagenet import DEFAULT_CROP_PCT, ImageNet
from data.images import DatasetError
from data.tinyimagenet import TinyImageNet, read_wnids

Dataset = TinyImageNet | ImageNet


def detect_layout(root: str | Path) -> Literal["tinyimagenet", "imagenet"]:
    """``"tinyimagenet"`` if ``root/wnids.txt`` exists, ``"imagenet"`` if ``train/`` or ``val/``
    holds class folders; otherwise ``DatasetError`` naming both layouts.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    if (root / "wnids.txt").is_file():
        return "tinyimagenet"
    for split in ("train", "val"):
        if (root / split).is_dir() and any(p.is_dir() for p in (root / split).iterdir()):
            return "imagenet"
    raise DatasetError(
        f"{root} is neither a TinyImageNet folder (wnids.txt, train/<wnid>/images/, val/) "
        "nor an ImageNet folder (train/<class>/*.JPEG, val/<class>/*.JPEG)"
    )


def open_dataset(
    root: str | Path,
    split: Literal["train", "val"],
    num_classes: int | None = None,
    max_per_class: int | None = None,
    img_size: int = 224,
    crop_pct: float = DEFAULT_CROP_PCT,
) -> Dataset:
    """The split of ``root`` in whichever layout it has (``detect_layout``).

    ``num_classes=None`` takes every class; ``max_per_class=None`` the layout's default
    (TinyImageNet: 500 train / 50 val; ImageNet: all). ``crop_pct`` applies to ImageNet only
    (TinyImageNet images are resized to a square).
    """
    if detect_layout(root) == "imagenet":
        return ImageNet(root, split, num_classes, max_per_class, img_size, crop_pct)
    if num_classes is None:
        num_classes = len(read_wnids(Path(root)))
    return TinyImageNet(root, split, num_classes, max_per_class, img_size)
