"""Effective receptive field of an OverLoCK checkpoint, computed with Jittor (twin of erf_torch.py).

For the first N validation images (default 200), the gradient of the centre unit of the
channel-mean output map of each stage (stage 1, 2: Base-Net; stage 3, 4: Focus-Net) with respect
to the input, |.| summed over channels and images (Luo et al., 2016); model in eval mode. Writes

- the figure (--out, default visualization/erf_jittor.png): 1 x 4 maps, colour log10(map / peak)
  clipped at -3, with the centred squares holding 20/50/99 % of the total;
- a CSV beside it (.csv): RepLKNet's high-contribution area ratio per stage, the smallest
  centred square holding 20/30/50/99 % of the total as a fraction of the input area, on the map
  itself ("raw") and on RepLKNet's log10(1 + mean) scale;
- the raw summed maps (.npz), which erf_torch.py reproduces from the same checkpoint.

The checkpoint may come from either framework (.pth or .pkl). Method details: utils/erf.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from analysis.erf import STAGE_MODULES, centre_unit, run_erf
from core.cli import main_guard

Forward = Callable[[Any], Sequence[Any]]  # jt.Var -> stage maps; Jittor is imported lazily


def pick_device(device: str) -> str:
    """Configure Jittor for ``device`` (before its first import) and return the one in use."""
    if device != "auto":
        os.environ["OVERLOCK_DEVICE"] = device
    from core.jittor_env import DEVICE

    return DEVICE


def load_model(state: Mapping[str, np.ndarray], model_name: str, num_classes: int) -> Any:
    """The named OverLoCK variant with these weights, in eval mode (BN uses running stats)."""
    from models import overlock_jittor

    model = getattr(overlock_jittor, model_name)(num_classes=num_classes)
    model.load_state_dict({k: np.array(v) for k, v in state.items()})
    model.eval()
    return model


def forward_stages(model: Any, x: Any) -> tuple[Any, list]:
    """Logits and the four stage outputs, caught by forward hooks on each stage's last block
    (so the model's own forward runs unchanged). Focus-Net blocks return (x, ctx): x is kept.
    """
    caught: dict[str, Any] = {}

    def keep(name: str):
        def hook(module, inputs, output) -> None:
            caught[name] = output[0] if isinstance(output, tuple) else output

        return hook

    blocks = [getattr(model, n)[-1] for n in STAGE_MODULES]
    for name, block in zip(STAGE_MODULES, blocks, strict=True):
        block.register_forward_hook(keep(name))
    try:
        logits = model(x)
    finally:
        for block in blocks:
            block.remove_forward_hook()
    return logits, [caught[n] for n in STAGE_MODULES]


def stage_input_grads(forward: Forward, images: np.ndarray) -> list[np.ndarray]:
    """For each map ``forward`` returns: d(channel-mean centre unit)/d(input), N x 3 x H x W.

    The centre units of all images are summed into one scalar: in eval mode the images do not
    interact, so one backward pass gives every image its own gradient.
    """
    from core.jittor_env import jt

    x = jt.array(images)
    maps = forward(x)
    grads = []
    for fmap in maps:
        cy, cx = centre_unit(fmap.shape)
        target = fmap[:, :, cy, cx].mean(dim=1).sum()
        grads.append(jt.grad(target, x))
    return [np.asarray(g) for g in jt.fetch_sync(grads)]  # one graph run for all stages


class JittorBackend:
    """The Jittor calls of erf.py (and gradcam.py); everything else is shared."""

    name = "jittor"

    def __init__(self, device: str = "auto") -> None:
        self.device = pick_device(device)
        self._shapes: list[tuple[int, int]] = []

    def load(self, state: Mapping[str, np.ndarray], model_name: str, num_classes: int) -> None:
        self.model = load_model(state, model_name, num_classes)

    def forward_stages(self, x) -> tuple[Any, list]:
        logits, stages = forward_stages(self.model, x)
        self._shapes = [tuple(s.shape[2:]) for s in stages]
        return logits, stages

    def stage_input_grads(self, images: np.ndarray) -> list[np.ndarray]:
        return stage_input_grads(lambda x: self.forward_stages(x)[1], images)

    def feature_shapes(self) -> list[tuple[int, int]]:
        return self._shapes


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda: run_erf(argv, "jittor", ".pkl", __doc__, JittorBackend))


if __name__ == "__main__":
    sys.exit(main())
