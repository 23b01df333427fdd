"""Grad-CAM: the maps of each stage from its outputs and their gradients, framework-free.

Grad-CAM (Selvaraju et al., ICCV 2017): for a class score y_c and a stage output A (C x h x w),
the channel weights are the spatially averaged gradients ``a_k = mean_ij dy_c/dA_k[i, j]`` and the
map is ``ReLU(sum_k a_k A_k)`` (``grad_cam``). Each map is upsampled bilinearly to the input size
(``upsample``), divided by its own maximum for display (``normalise``) and overlaid on the image
(``overlay``). The class is the predicted one unless given (``pick_classes``). A
``backends.base.Backend`` runs the model and returns the stage outputs and their gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from analysis.inputs import to_model_input
from backends.base import Backend

OVERLAY_ALPHA = 0.5  # weight of the heat map over the image
CMAP = "jet"


def pick_classes(logits: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """The given class per image, or the predicted one (argmax of the logits)."""
    if classes is None:
        return np.argmax(logits, axis=1).astype(np.int64)
    return np.broadcast_to(np.asarray(classes, dtype=np.int64), (len(logits),)).copy()


def grad_cam(activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """N x C x h x w activations and gradients -> N x h x w maps ``ReLU(sum_k a_k A_k)``."""
    weights = grads.astype(np.float64).mean(axis=(2, 3))  # a_k, N x C
    cam = np.einsum("nc,nchw->nhw", weights, activations.astype(np.float64))
    return np.maximum(cam, 0.0)


def upsample(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """N x h x w -> N x H x W, bilinear (Pillow, half-pixel centres)."""
    height, width = size
    return np.stack(
        [
            np.asarray(
                Image.fromarray(c.astype(np.float32), mode="F").resize(
                    (width, height), Image.Resampling.BILINEAR
                )
            )
            for c in cams
        ]
    ).astype(np.float64)


def normalise(cams: np.ndarray) -> np.ndarray:
    """Each map divided by its own maximum (an all-zero map stays zero)."""
    peak = cams.reshape(len(cams), -1).max(axis=1)
    return cams / np.where(peak > 0, peak, 1.0)[:, None, None]


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """uint8 H x W x 3 image and a [0, 1] H x W map -> float RGB in [0, 1], heat map on top."""
    import matplotlib

    heat = matplotlib.colormaps[CMAP](np.clip(cam, 0, 1))[..., :3]
    return (1 - alpha) * image.astype(np.float64) / 255.0 + alpha * heat


def peak_position(cam: np.ndarray) -> tuple[int, int]:
    """(row, column) of a map's maximum."""
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(row), int(col)


@dataclass
class CamResult:
    """Grad-CAMs of some images: cams[s] is stage s's N x H x W map at input size, in [0, 1]."""

    indices: list[int]
    images: np.ndarray  # N x H x W x 3 uint8
    labels: np.ndarray  # true classes
    classes: np.ndarray  # explained classes (predicted unless --class)
    probs: np.ndarray  # N x K softmax of the logits
    predicted: np.ndarray
    cams: np.ndarray  # S x N x H x W
    raw: list[np.ndarray]  # per stage N x h x w, before upsampling and normalisation


def compute_cams(
    backend: Backend, images: np.ndarray, classes: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Run the backend on uint8 N x H x W x 3 images; (logits, classes, S x N x H x W, raw).
    ``classes``: the class to explain per image, None for the predicted ones.
    """
    logits, chosen, acts, grads = backend.activations_and_grads(
        to_model_input(images), lambda logits: pick_classes(logits, classes)
    )
    raw = [grad_cam(a, g) for a, g in zip(acts, grads, strict=True)]
    size = images.shape[1:3]
    cams = np.stack([normalise(upsample(r, size)) for r in raw])
    return logits, chosen, cams, raw


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so large logits do not overflow."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def short_name(name: str, limit: int = 22) -> str:
    """First synonym of a words.txt entry, cut to ``limit`` characters."""
    name = name.split(",")[0].strip()
    return name if len(name) <= limit else name[: limit - 1] + "…"
