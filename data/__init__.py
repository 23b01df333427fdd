"""The framework-free data pipeline: datasets, deterministic batches, the recipe's augmentations.

It imports only ``core`` from the project, and numpy and Pillow from outside; never torch,
jittor or timm. The Jittor and the PyTorch training scripts both use it, so they see
bit-identical batches::

    from data import BatchLoader, open_dataset, resolve_data_dir

    root = resolve_data_dir(args.data_dir)          # None -> generated synthetic default
    train = open_dataset(root, "train", num_classes=20, img_size=64)
    with BatchLoader(train, 64, seed=args.seed, num_workers=2) as loader:
        for epoch in range(start_epoch, epochs):
            for images, labels in loader.batches(epoch, start_batch=0):
                ...  # float32 N x 3 x 64 x 64, int64 N: wrap with jt.array / torch.from_numpy

What lives where, bottom first (each module imports only those above it):

- ``images``: image decoding (``decode_rgb``, ``decode_image``), the errors (``DatasetError``,
  ``CorruptImageError``), the one-line ``DataWarning``, the normalisation constants and
  ``normalize``, file-name ordering.
- ``text``: the datasets' UTF-8 text files (``read_lines``: undecodable bytes are a
  ``DatasetError`` naming the line; ``read_display_lines``: replaced, for display names).
- ``streams``: every random stream in one table (``Stream``) and the counter hash they come from
  (``counter_hash``, ``epoch_order``, ``flip_flags``, ``step_seed``, seeded generators).
- ``tinyimagenet``, ``imagenet``: the two folder layouts' readers (``TinyImageNet``,
  ``ImageNet`` with the evaluation transform ``eval_transform``).
- ``datasets``: the layout dispatch (``detect_layout``, ``open_dataset``).
- ``randaugment``, ``augment``: the recipe's augmentations as pure transforms (``Augment``,
  ``TrainTransform``, ``RandAugment``, mixup/cutmix, random erasing).
- ``loader``: ``BatchLoader``, which owns the I/O: decoding, worker processes, the RAM cache.
- ``synthetic``: the generated default dataset (``python -m data.synthetic``); imported only when
  needed, so ``python -m data.synthetic`` runs cleanly. ``bench``: ``python -m data.bench``.
"""

from __future__ import annotations

from pathlib import Path

from data.datasets import detect_layout, open_dataset
from data.imagenet import ImageNet
from data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CorruptImageError,
    DatasetError,
    DataWarning,
    decode_image,
    normalize,
)
from data.loader import BatchLoader, load_batch
from data.streams import Stream, counter_hash, epoch_order, flip_flags, step_seed
from data.tinyimagenet import TinyImageNet


def default_dataset_dir() -> Path:
    """Folder of the generated default dataset (see ``data.synthetic.default_dataset_dir``)."""
    from data import synthetic

    return synthetic.default_dataset_dir()


def ensure_default_dataset() -> Path:
    """Generate the default synthetic dataset if needed; return its folder."""
    from data import synthetic

    return synthetic.ensure_default_dataset()


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """``data_dir`` as a Path, or the default synthetic dataset (generated on first use)."""
    return ensure_default_dataset() if data_dir is None else Path(data_dir)


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchLoader",
    "CorruptImageError",
    "DataWarning",
    "DatasetError",
    "ImageNet",
    "Stream",
    "TinyImageNet",
    "counter_hash",
    "decode_image",
    "default_dataset_dir",
    "detect_layout",
    "ensure_default_dataset",
    "epoch_order",
    "flip_flags",
    "load_batch",
    "normalize",
    "open_dataset",
    "resolve_data_dir",
    "step_seed",
]
