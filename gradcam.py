"""Grad-CAM of OverLoCK at its four stage outputs, computed with Jittor (twin of gradcam_torch.py).

For each validation image (--images, default the first 8 of the validation order training uses)
the class score (the predicted class, or --class) is differentiated with respect to the outputs of
stage 1, 2 (Base-Net) and 3, 4 (Focus-Net); Grad-CAM (Selvaraju et al., 2017) weights each stage's
channels by their mean gradient, keeps the positive part, upsamples it to the image and overlays
it. Model in eval mode. Writes

- the figure (--out, default visualization/gradcam_jittor.png): one row per image (true and
  predicted class on the left), columns input + stages 1-4, each map scaled to its maximum;
- the maps at stage resolution, the logits and the classes (.npz beside the figure).

The checkpoint may come from either framework (.pth or .pkl). Method details: utils/gradcam.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from analysis.gradcam import one_hot, pick_classes, run_gradcam
from core.cli import main_guard
from erf import JittorBackend

Forward = Callable[[Any], tuple[Any, list[Any]]]  # jt.Var -> (logits, stage outputs)


def activations_and_grads(
    forward: Forward, images: np.ndarray, classes: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """(logits, explained classes, stage outputs, d class score / d stage output) as numpy.

    ``forward(x)`` returns (logits, stage outputs). The scores of all images are summed into one
    scalar: in eval mode images do not interact, so each gets its own gradient.
    """
    from core.jittor_env import jt

    x = jt.array(images)
    logits, maps = forward(x)
    chosen = pick_classes(logits.numpy(), classes)
    selector = jt.array(one_hot(chosen, logits.shape[1]))
    score = (logits * selector).sum()
    grads = jt.grad(score, maps)
    as_numpy = [np.asarray(v) for v in jt.fetch_sync([logits, *maps, *grads])]
    n = len(maps)
    return as_numpy[0], chosen, as_numpy[1 : 1 + n], as_numpy[1 + n :]


class JittorCamBackend(JittorBackend):
    """erf's model loading and stage hooks, plus the Grad-CAM gradients."""

    def activations_and_grads(
        self, images: np.ndarray, classes: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        return activations_and_grads(self.forward_stages, images, classes)


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda: run_gradcam(argv, "jittor", ".pkl", __doc__, JittorCamBackend))


if __name__ == "__main__":
    sys.exit(main())
