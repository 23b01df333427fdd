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

The checkpoint may come from either framework (.pth or .pkl). Method details: analysis/erf.py.
"""

from __future__ import annotations

import sys

from core.cli import main_guard


def main(argv: list[str] | None = None) -> int:
    def run() -> None:
        # Imported here, inside the guard: Ctrl-C during the framework's import is one line.
        from analysis.erf import run_erf
        from backends.torch_backend import TorchBackend

        run_erf(argv, __doc__, TorchBackend)

    return main_guard(run)


if __name__ == "__main__":
    sys.exit(main())
