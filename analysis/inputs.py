"""What ERF and Grad-CAM both read: the validation images as the model sees them, the flags
that choose them and the checkpoint, and the names of the four stages they explain.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import UsageError

if TYPE_CHECKING:
    from data import TinyImageNet

STAGE_NAMES = (
    "Stage 1 (Base-Net)",
    "Stage 2 (Base-Net)",
    "Stage 3 (Focus-Net)",
    "Stage 4 (Focus-Net)",
)


def stage_name(stage: int) -> str:
    """The name of stage ``stage`` (0-based); "map s" past the four stages (toy models)."""
    return STAGE_NAMES[stage] if stage < len(STAGE_NAMES) else f"map {stage + 1}"


def check_img_size(img_size: int) -> None:
    """A multiple of 32, so every stage's centre unit maps to the input's centre pixel."""
    if img_size < 32 or img_size % 32:
        raise UsageError(
            f"--img-size {img_size}: OverLoCK downsamples by 32, use a multiple of 32 (e.g. 64)"
        )


def val_dataset(data: Path | None, num_classes: int, img_size: int) -> TinyImageNet:
    """The validation split the training scripts evaluate on (same class selection and order)."""
    from data import TinyImageNet, resolve_data_dir

    return TinyImageNet(resolve_data_dir(data), "val", num_classes, None, img_size)


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 N x H x W x 3 -> normalised float32 N x 3 x H x W, exactly as in training."""
    from data import normalize

    return normalize(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def add_model_args(parser: argparse.ArgumentParser, framework: str, suffix: str) -> None:
    """--checkpoint, --data, --num-classes, --img-size, --device (ERF and Grad-CAM alike);
    the default checkpoint is ``framework``'s best one (extension ``suffix``).
    """
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=Path("logs") / framework / f"checkpoint_best{suffix}",
        help="weights to analyse: .pth or .pkl of either framework (converted on the fly)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="TinyImageNet-layout folder; default: the generated dataset training uses",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        help="classes of the dataset to read (default: the checkpoint's classifier width)",
    )
    parser.add_argument(
        "--img-size", type=int, default=64, help="input side in px (a multiple of 32)"
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the model runs (auto: CUDA when available)",
    )
