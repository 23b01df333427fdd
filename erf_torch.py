"""Effective receptive field of an OverLoCK checkpoint, computed with PyTorch (twin of erf.py).

For the first N validation images (default 200), the gradient of the centre unit of the
channel-mean output map of each stage (stage 1, 2: Base-Net; stage 3, 4: Focus-Net) with respect
to the input, |.| summed over channels and images (Luo et al., 2016); model in eval mode. Writes

- the figure (--out, default visualization/erf_torch.png): 1 x 4 maps, colour log10(map / peak)
  clipped at -3, with the centred squares holding 20/50/99 % of the total;
- a CSV beside it (.csv): RepLKNet's high-contribution area ratio per stage, the smallest
  centred square holding 20/30/50/99 % of the total as a fraction of the input area, on the map
  itself ("raw") and on RepLKNet's log10(1 + mean) scale;
- the raw summed maps (.npz), which erf.py reproduces from the same checkpoint.

The checkpoint may come from either framework (.pth or .pkl). Method details: utils/erf.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from analysis.erf import STAGE_MODULES, centre_unit, run_erf
from core.cli import main_guard

Forward = Callable[[torch.Tensor], Sequence[torch.Tensor]]


def pick_device(device: str) -> torch.device:
    """The torch device for ``device`` (auto: CUDA when available)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def load_model(
    state: Mapping[str, np.ndarray], model_name: str, num_classes: int, device: torch.device
) -> torch.nn.Module:
    """The named OverLoCK variant with these weights, in eval mode (BN uses running stats)."""
    from models import overlock_torch

    model = getattr(overlock_torch, model_name)(num_classes=num_classes)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return model.to(device).eval()


def forward_stages(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Logits and the four stage outputs, caught by forward hooks on each stage's last block
    (so the model's own forward runs unchanged). Focus-Net blocks return (x, ctx): x is kept.
    """
    caught: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, inputs, output) -> None:
            caught[name] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = [getattr(model, n)[-1].register_forward_hook(keep(n)) for n in STAGE_MODULES]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, [caught[n] for n in STAGE_MODULES]


def stage_input_grads(
    forward: Forward, images: np.ndarray, device: torch.device
) -> list[np.ndarray]:
    """For each map ``forward`` returns: d(channel-mean centre unit)/d(input), N x 3 x H x W.

    The centre units of all images are summed into one scalar: in eval mode the images do not
    interact, so one backward pass gives every image its own gradient.
    """
    x = torch.from_numpy(images).to(device).requires_grad_(True)
    maps = forward(x)
    grads = []
    for s, fmap in enumerate(maps):
        cy, cx = centre_unit(fmap.shape)
        target = fmap[:, :, cy, cx].mean(dim=1).sum()
        (grad,) = torch.autograd.grad(target, x, retain_graph=s < len(maps) - 1)
        grads.append(grad.cpu().numpy())
    return grads


class TorchBackend:
    """The PyTorch calls of erf_torch.py (and gradcam_torch.py); everything else is shared."""

    name = "torch"

    def __init__(self, device: str = "auto") -> None:
        self.device = pick_device(device)
        self._shapes: list[tuple[int, int]] = []

    def load(self, state: Mapping[str, np.ndarray], model_name: str, num_classes: int) -> None:
        self.model = load_model(state, model_name, num_classes, self.device)

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        logits, stages = forward_stages(self.model, x)
        self._shapes = [tuple(s.shape[2:]) for s in stages]
        return logits, stages

    def stage_input_grads(self, images: np.ndarray) -> list[np.ndarray]:
        return stage_input_grads(lambda x: self.forward_stages(x)[1], images, self.device)

    def feature_shapes(self) -> list[tuple[int, int]]:
        return self._shapes


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda: run_erf(argv, "torch", ".pth", __doc__, TorchBackend))


if __name__ == "__main__":
    sys.exit(main())
