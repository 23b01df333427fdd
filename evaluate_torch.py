"""Top-1 / top-5 accuracy and loss of an OverLoCK checkpoint, computed with PyTorch (twin of
evaluate.py: same flags, same numbers).

    python evaluate_torch.py --checkpoint overlock_t_in1k_224.pth --data /path/to/imagenet
    python evaluate_torch.py --checkpoint logs/torch/checkpoint_best.pth --data DIR --img-size 64

The checkpoint may come from either framework (.pth or .pkl): a training checkpoint, a bare state
dict or an official release file. ImageNet-layout data gets the official evaluation transform
(bicubic resize to floor(img_size / crop_pct), centre crop; crop_pct per variant); class folders
are sorted and class i is scored as head output i. Prints one line (model, checkpoint, images,
top-1, top-5, loss); --out also writes it as JSON. Details: utils/evaluate.py.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np
import torch

from analysis.evaluate import run_evaluation
from core.cli import main_guard
from core.errors import UsageError


def pick_device(device: str) -> torch.device:
    """The torch device for ``device`` (auto: CUDA when available)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: PyTorch finds no CUDA device")
    return torch.device(device)


class TorchBackend:
    """The PyTorch calls of evaluate_torch.py; everything else is shared."""

    name = "torch"

    def __init__(self, device: str = "auto") -> None:
        self.torch_device = pick_device(device)
        self.device = str(self.torch_device)

    def load(
        self, state: Mapping[str, np.ndarray], model_name: str, num_classes: int, reparam: bool
    ) -> None:
        from models import overlock_torch

        model = getattr(overlock_torch, model_name)(num_classes=num_classes)
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        model.eval()  # BatchNorm uses its running statistics
        if reparam:
            model.reparam()
        self.model = model.to(self.torch_device)

    def logits(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(images).to(self.torch_device)
            return self.model(x).float().cpu().numpy()


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda: run_evaluation(argv, __doc__, TorchBackend))


if __name__ == "__main__":
    sys.exit(main())
