"""Grad-CAM of OverLoCK at its four stage outputs, computed with PyTorch (twin of gradcam.py).

For each validation image (--images, default the first 8 of the validation order training uses)
the class score (the predicted class, or --class) is differentiated with respect to the outputs of
stage 1, 2 (Base-Net) and 3, 4 (Focus-Net); Grad-CAM (Selvaraju et al., 2017) weights each stage's
channels by their mean gradient, keeps the positive part, upsamples it to the image and overlays
it. Model in eval mode. Writes

- the figure (--out, default visualization/gradcam_torch.png): one row per image (true and
  predicted class on the left), columns input + stages 1-4, each map scaled to its maximum;
- the maps at stage resolution, the logits and the classes (.npz beside the figure).

The checkpoint may come from either framework (.pth or .pkl). Method details: analysis/gradcam.py.
"""

from __future__ import annotations

import sys

from core.cli import main_guard


def main(argv: list[str] | None = None) -> int:
    def run() -> None:
        # Imported here, inside the guard: Ctrl-C during the framework's import is one line.
        from analysis.gradcam import run_gradcam
        from backends.torch_backend import TorchBackend

        run_gradcam(argv, __doc__, TorchBackend)

    return main_guard(run)


if __name__ == "__main__":
    sys.exit(main())
