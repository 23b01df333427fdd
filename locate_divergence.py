"""Where do the Jittor and PyTorch twins part? Block by block, on one checkpoint and one batch.

For anyone who changes a model: loads the checkpoint (.pth or .pkl of either framework) into
both twins, runs one batch through each (by default the first training batch of --data with
--seed, in training mode with the training loss, exactly as a training step starts; --random
for a random batch, --eval for eval mode) and prints, block by block in forward order (stem,
each stage's blocks and downsampling, the Overview-Net, the context projection, the Focus-Net
blocks, the heads):

- the max |Δ| of the block's outputs between the two frameworks and that relative to the
  reference framework's largest |output| (a block returning several maps: the worst one);
- the max |Δ| of the gradients of the block's parameters, relative to the block's largest
  reference gradient (floored at 1e-3 of the model's largest);
- "!" beside each value above its tolerance, and the verdict: the first block in forward order
  whose outputs differ (a forward difference also changes what reads its output and the
  gradients of the blocks before it), or, when every output agrees, the first block in backward
  order whose gradients differ.

The default tolerances (1e-4 for outputs, 1e-3 for gradients, relative) sit well above the
round-off measured between the twins (~1e-6 relative per block on XXT in training mode on the
CPU) and far below what a real mistake gives. Both frameworks run on the CPU by default; on a
GPU, TF32 and other kernels change the round-off.

Exit status: 0 the twins agree, 1 a block is above tolerance, 2 bad input.

Example: .venv/bin/python locate_divergence.py --checkpoint logs/torch/init.pth
"""

from __future__ import annotations

import sys
from typing import Any

from core.cli import main_guard


def _torch_probe() -> Any:
    from backends.probe_torch import block_probe

    return block_probe


def _jittor_probe() -> Any:
    from backends.probe_jittor import block_probe

    return block_probe


def main(argv: list[str] | None = None) -> int:
    found = []

    def run() -> None:
        from analysis.divergence import run_locator

        probes = {"torch": _torch_probe, "jittor": _jittor_probe}
        found.append(run_locator(argv, __doc__, probes).diverged)

    status = main_guard(run)
    return status or int(bool(found and found[0]))


if __name__ == "__main__":
    sys.exit(main())
