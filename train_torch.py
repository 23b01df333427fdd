"""Train OverLoCK on TinyImageNet-N with PyTorch (the twin of train.py, same flags and outputs).

Loss = CE(main head) + aux_weight * CE(auxiliary head); AdamW; validation uses the main head.
Batches come from the shared framework-free loader, so a Jittor run with the same --seed and
--init sees bit-identical batches. Each epoch appends a row to OUT/log.csv and saves
OUT/checkpoint_latest.pth (and checkpoint_best.pth); OUT/init.pth holds the starting weights,
which train.py --init accepts to start an aligned Jittor run.

Data parallel: under torchrun (e.g. `torchrun --nproc_per_node 4 train_torch.py ...`) each
process trains on its shard of every global batch of --batch-size images with
DistributedDataParallel (NCCL on GPUs, gloo on CPU); rank 0 prints and writes.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from core.cli import main_guard
from engine.signals import stopping_while_starting

if TYPE_CHECKING:
    from backends.base import Backend


def _backend() -> type[Backend]:
    from backends.torch_backend import TorchBackend

    return TorchBackend


def _train(argv: list[str] | None) -> None:
    # Stop signals answer in one line from the first moment, the framework's import included.
    with stopping_while_starting():
        from engine.loop import run_cli

        run_cli(argv, __doc__, "torch", _backend)


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda: _train(argv))


if __name__ == "__main__":
    sys.exit(main())
