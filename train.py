"""Train OverLoCK on TinyImageNet-N with Jittor (twin of train_torch.py: same flags and outputs).

Loss = CE(main head) + aux_weight * CE(auxiliary head); AdamW; validation uses the main head.
Batches come from the shared framework-free loader, so a PyTorch run with the same --seed and
--init sees bit-identical batches. Each epoch appends a row to OUT/log.csv and saves
OUT/checkpoint_latest.pkl (and checkpoint_best.pkl); OUT/init.pkl holds the starting weights.
--init accepts a PyTorch .pth as well (e.g. logs/torch/init.pth for an aligned run).

Data parallel: under mpirun (e.g. `mpirun -np 4 python train.py ...`) each process trains on its
shard of every global batch of --batch-size images with Jittor's MPI support (gradients averaged
by the optimizer; NCCL on GPUs); rank 0 prints and writes.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from core.cli import main_guard
from engine.signals import stopping_while_starting

if TYPE_CHECKING:
    from backends.base import Backend


def _backend() -> type[Backend]:
    from backends.jittor_backend import JittorBackend

    return JittorBackend


def _train(argv: list[str] | None) -> None:
    # Stop signals answer in one line from the first moment, the framework's import included.
    with stopping_while_starting():
        from engine.loop import run_cli

        run_cli(argv, __doc__, "jittor", _backend)


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda: _train(argv))


if __name__ == "__main__":
    sys.exit(main())
