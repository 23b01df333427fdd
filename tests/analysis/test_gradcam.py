"""Grad-CAM (analysis.gradcam_maps): a toy model whose evidence sits in a known patch peaks
there (both frameworks, through the backends' own gradient code); the formula on a hand example.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from analysis.gradcam_maps import grad_cam, normalise, peak_position, pick_classes, upsample
from backends import jittor_backend, torch_backend

PATCH = (slice(6, 12), slice(20, 28))  # rows, columns of the bright patch in a 32x32 image
# Class 0 reads channels 0-1 (bright-patch detectors), class 1 reads them negatively.
CLASS_WEIGHTS = np.array([[1.0, 1.0, 0.0, 0.0], [-1.0, -1.0, 0.0, 0.0]], dtype=np.float32)


def _toy_images() -> np.ndarray:
    images = np.zeros((2, 3, 32, 32), dtype=np.float32)
    images[0][:, PATCH[0], PATCH[1]] = 1.0
    images[1][:, PATCH[0], PATCH[1]] = 0.5
    images += np.random.default_rng(2).uniform(0, 0.05, images.shape).astype(np.float32)
    return images


def _toy_kernel() -> np.ndarray:
    kernel = np.full((4, 3, 3, 3), 0.1, dtype=np.float32)
    kernel[2:] = -0.1  # channels 2-3 are dead (ReLU) on these images
    return kernel


def _torch_toy(x):
    a = TF.relu(TF.conv2d(x, torch.from_numpy(_toy_kernel()), padding=1))
    a = a.reshape(*a.shape[:2], 16, 2, 16, 2).mean(dim=(3, 5))  # 2x2 pooling: a 16x16 stage
    logits = a.mean(dim=(2, 3)) @ torch.from_numpy(CLASS_WEIGHTS).T
    return logits, [a]


def _jittor_toy(x):
    from core.jittor_env import jt

    a = jt.nn.relu(jt.nn.conv2d(x, jt.array(_toy_kernel()), padding=1))
    a = a.reshape(*a.shape[:2], 16, 2, 16, 2).mean(dims=(3, 5))
    logits = jt.matmul(a.mean(dims=(2, 3)), jt.array(CLASS_WEIGHTS.T.copy()))
    return logits, [a]


def _choose(classes: np.ndarray | None):
    """The class choice analysis.compute_cams hands a backend."""
    return lambda logits: pick_classes(logits, classes)


@pytest.mark.parametrize("framework", ["torch", "jittor"])
def test_gradcam_peaks_on_the_evidence(framework: str) -> None:
    images = _toy_images()
    if framework == "torch":
        run = lambda classes: torch_backend.activations_and_grads(  # noqa: E731
            _torch_toy, images, _choose(classes), torch.device("cpu")
        )
    else:
        run = lambda classes: jittor_backend.activations_and_grads(  # noqa: E731
            _jittor_toy, images, _choose(classes)
        )
    logits, chosen, acts, grads = run(None)
    assert chosen.tolist() == [0, 0]  # predicted: the patch class
    assert acts[0].shape == grads[0].shape == (2, 4, 16, 16)
    cams = normalise(upsample(grad_cam(acts[0], grads[0]), (32, 32)))
    for cam in cams:
        row, col = peak_position(cam)
        assert PATCH[0].start - 2 <= row < PATCH[0].stop + 2
        assert PATCH[1].start - 2 <= col < PATCH[1].stop + 2
        inside = cam[PATCH[0], PATCH[1]].mean()
        assert inside > 0.5 and cam[20:, :10].max() < 0.1 * inside  # far from the patch: ~0
    # The other class has only negative evidence there: ReLU leaves nothing.
    _, chosen, acts, grads = run(np.array([1, 1]))
    assert chosen.tolist() == [1, 1]
    assert grad_cam(acts[0], grads[0]).max() == 0.0


def test_grad_cam_formula() -> None:
    acts = np.zeros((1, 2, 2, 2))
    acts[0, 0] = [[1, 0], [0, 0]]
    acts[0, 1] = [[0, 0], [0, 3]]
    grads = np.zeros((1, 2, 2, 2))
    grads[0, 0] = 2.0  # a_0 = 2
    grads[0, 1] = -4.0  # a_1 = -4
    np.testing.assert_array_equal(grad_cam(acts, grads)[0], [[2, 0], [0, 0]])
