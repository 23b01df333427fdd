"""Framework-free TinyImageNet-N data pipeline (numpy + Pillow only; no torch/jittor here).

Both the Jittor and the PyTorch training scripts use it, so they see bit-identical batches::

    from data import BatchLoader, TinyImageNet, resolve_data_dir

    root = resolve_data_dir(args.data_dir)          # None -> generated synthetic default
    train = TinyImageNet(root, "train", num_classes=20, img_size=64)
    with BatchLoader(train, 64, seed=args.seed, num_workers=2) as loader:
        for epoch in range(start_epoch, epochs):
            for images, labels in loader.batches(epoch, start_batch=0):
                ...  # float32 N x 3 x 64 x 64, int64 N: wrap with jt.array / torch.from_numpy

``data.synthetic`` is imported only when needed, so ``python -m data.synthetic`` runs cleanly.
"""

from __future__ import annotations

from pathlib import Path

from data.loader import BatchLoader, counter_hash, epoch_order, flip_flags, load_batch
from data.tinyimagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CorruptImageError,
    DatasetError,
    TinyImageNet,
    decode_image,
    normalize,
)


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
    "DatasetError",
    "TinyImageNet",
    "counter_hash",
    "decode_image",
    "default_dataset_dir",
    "ensure_default_dataset",
    "epoch_order",
    "flip_flags",
    "load_batch",
    "normalize",
    "resolve_data_dir",
]
