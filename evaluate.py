"""Top-1 / top-5 accuracy and loss of an OverLoCK checkpoint, computed with Jittor (twin of
evaluate_torch.py: same flags, same numbers).

    python evaluate.py --checkpoint overlock_t_in1k_224.pth --data /path/to/imagenet
    python evaluate.py --checkpoint logs/jittor/checkpoint_best.pkl --data DIR --img-size 64

The checkpoint may come from either framework (.pth or .pkl): a training checkpoint, a bare state
dict or an official release file. ImageNet-layout data gets the official evaluation transform
(bicubic resize to floor(img_size / crop_pct), centre crop; crop_pct per variant); class folders
are sorted and class i is scored as head output i. Prints one line (model, checkpoint, images,
top-1, top-5, loss); --out also writes it as JSON. Details: utils/evaluate.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import numpy as np

from analysis.evaluate import run_evaluation
from core.cli import main_guard


def pick_device(device: str) -> str:
    """Configure Jittor for ``device`` (before its first import) and return the one in use."""
    if device != "auto":
        os.environ["OVERLOCK_DEVICE"] = device
    from core.jittor_env import DEVICE

    return DEVICE


class JittorBackend:
    """The Jittor calls of evaluate.py; everything else is shared."""

    name = "jittor"

    def __init__(self, device: str = "auto") -> None:
        self.device = pick_device(device)

    def load(
        self, state: Mapping[str, np.ndarray], model_name: str, num_classes: int, reparam: bool
    ) -> None:
        from models import overlock_jittor

        model = getattr(overlock_jittor, model_name)(num_classes=num_classes)
        model.load_state_dict({k: np.array(v) for k, v in state.items()})
        model.eval()  # BatchNorm uses its running statistics
        if reparam:
            model.reparam()
        self.model = model

    def logits(self, images: np.ndarray) -> np.ndarray:
        from core.jittor_env import jt

        with jt.no_grad():
            return self.model(jt.array(images)).numpy()


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda: run_evaluation(argv, __doc__, JittorBackend))


if __name__ == "__main__":
    sys.exit(main())
