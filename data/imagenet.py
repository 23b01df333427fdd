"""ImageNet-layout datasets (the official OverLoCK data layout), numpy + Pillow only.

Layout (as in the official README; ``train/`` and/or ``val/``)::

    train/<class>/*.JPEG        e.g. train/n01440764/n01440764_10026.JPEG
    val/<class>/*.JPEG          e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG

Selection rules (they fix what every framework sees, so keep them stable):

- classes: the class folders of ``train/`` (or of ``val/`` if there is no ``train/``) in sorted
  order, the first ``num_classes`` of them; class index = position (torchvision/timm order for
  ImageNet's wnids). ``train/`` and ``val/`` must have the same class folders.
- files: the images directly in each class folder (.JPEG/.jpg/.png), natural order, the first
  ``max_per_class`` of each class.

``ImageNet.load`` applies the official evaluation transform (``eval_transform``: shorter side
resized to ``floor(img_size / crop_pct)`` with bicubic filtering, centre crop ``img_size``; timm
0.6.12 ``transforms_imagenet_eval`` with the variant's ``crop_pct``) to both splits; training
augmentation (``data.augment``) reads the decoded original instead. ``data.datasets`` detects
the layout (TinyImageNet or ImageNet) so a training script accepts either folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from data.images import DatasetError, decode_rgb, image_names

DEFAULT_CROP_PCT = 0.875  # timm's default; each OverLoCK variant sets its own (models.variants)
_LAYOUT_HINT = "expected an ImageNet folder (train/<class>/*.JPEG, val/<class>/*.JPEG)"
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def eval_transform(
    img: Image.Image, img_size: int, crop_pct: float, interpolation: str = "bicubic"
) -> np.ndarray:
    """timm's evaluation transform: shorter side -> ``floor(img_size / crop_pct)`` (longer side
    truncated in proportion, as torchvision's ``Resize``), centre crop ``img_size`` (offsets
    rounded as torchvision's ``CenterCrop``). Returns ``img_size`` x ``img_size`` x 3 uint8.
    """
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    scale = int(math.floor(img_size / crop_pct))
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(scale * long / short)
    new_w, new_h = (scale, new_long) if w <= h else (new_long, scale)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), _RESAMPLE[interpolation])
    top = int(round((new_h - img_size) / 2.0))
    left = int(round((new_w - img_size) / 2.0))
    return np.array(img.crop((left, top, left + img_size, top + img_size)), dtype=np.uint8)


def _class_folders(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise DatasetError(f"split folder not found: {folder}; {_LAYOUT_HINT}")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"no class folders in {folder}; {_LAYOUT_HINT}")
    return classes


def select_classes(root: Path, num_classes: int | None) -> list[str]:
    """The first ``num_classes`` (None: all) class folders, checking train/ and val/ agree."""
    splits = [s for s in ("train", "val") if (root / s).is_dir()]
    if not splits:
        raise DatasetError(f"neither train/ nor val/ in {root}; {_LAYOUT_HINT}")
    found = {s: _class_folders(root / s) for s in splits}
    if len(found) == 2 and found["train"] != found["val"]:
        odd = sorted(set(found["train"]) ^ set(found["val"]))[0]
        where = "train/" if odd in found["train"] else "val/"
        raise DatasetError(
            f"train/ and val/ of {root} have different class folders ({odd!r} only in {where})"
        )
    classes = found[splits[0]]
    if num_classes is None:
        return classes
    if num_classes < 1:
        raise DatasetError(f"num_classes must be >= 1, got {num_classes}")
    if num_classes > len(classes):
        raise DatasetError(
            f"asked for {num_classes} classes but {root / splits[0]} has only {len(classes)} "
            f"class folders; use num_classes <= {len(classes)}"
        )
    return classes[:num_classes]


class ImageNet:
    """One split of an ImageNet-layout folder: file list, labels and the evaluation transform.

    Same interface as ``TinyImageNet`` (``paths``, ``labels``, ``num_classes``, ``class_names``,
    ``split``, ``train``, ``img_size``, ``len``, ``load``), so ``BatchLoader`` serves either.

    Args:
        root: folder in the ImageNet layout (see the module docstring).
        split: ``"train"`` or ``"val"``.
        num_classes: the first N class folders in sorted order; ``None`` = all.
        max_per_class: cap on images per class (natural file order); ``None`` = all.
        img_size: output side in pixels.
        crop_pct: centre-crop fraction of the evaluation transform (official per variant:
            ``models.variants``; timm's default 0.875).
        interpolation: filter of the evaluation resize (official: bicubic).

    Raises ``DatasetError`` with a one-line message if the layout is wrong.
    """

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val"] = "train",
        num_classes: int | None = None,
        max_per_class: int | None = None,
        img_size: int = 224,
        crop_pct: float = DEFAULT_CROP_PCT,
        interpolation: str = "bicubic",
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if interpolation not in _RESAMPLE or not 0 < crop_pct <= 1 or img_size < 1:
            raise ValueError(
                f"bad ImageNet settings: img_size={img_size}, crop_pct={crop_pct}, "
                f"interpolation={interpolation!r}"
            )
        if max_per_class is not None and max_per_class < 1:
            raise ValueError(f"max_per_class must be >= 1, got {max_per_class}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder not found: {self.root}; {_LAYOUT_HINT}")
        self.split = split
        self.img_size, self.crop_pct, self.interpolation = int(img_size), crop_pct, interpolation
        self.max_per_class = max_per_class
        self.wnids = select_classes(self.root, num_classes)
        self.num_classes = len(self.wnids)
        self.class_names = list(self.wnids)
        self.paths: list[str] = []
        labels = []
        for label, wnid in enumerate(self.wnids):
            folder = self.root / split / wnid
            if not folder.is_dir():
                raise DatasetError(f"class folder not found: {folder}; {_LAYOUT_HINT}")
            names = image_names(folder)[:max_per_class]
            if not names:
                raise DatasetError(f"no images (.JPEG/.jpg/.png) in {folder}")
            self.paths += [str(folder / name) for name in names]
            labels += [label] * len(names)
        self.labels: np.ndarray = np.array(labels, dtype=np.int64)

    @property
    def train(self) -> bool:
        """True for the training split (shuffle + augmentation by default in the loader)."""
        return self.split == "train"

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> np.ndarray:
        """Image ``index`` after the evaluation transform, ``img_size`` x ``img_size`` x 3 uint8.

        Raises ``CorruptImageError`` if the file cannot be decoded.
        """
        img = decode_rgb(self.paths[index])
        return eval_transform(img, self.img_size, self.crop_pct, self.interpolation)

    def __repr__(self) -> str:
        return (
            f"ImageNet({str(self.root)!r}, split={self.split!r}, classes={self.num_classes}, "
            f"images={len(self)}, img_size={self.img_size}, crop_pct={self.crop_pct})"
        )
