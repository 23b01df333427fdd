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

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.convert import canonical_state
from utils.training import Backend, build_parser, main_guard, run_training


class JittorBackend(Backend):
    name = "jittor"
    suffix = ".pkl"

    def __init__(self, device: str, lr: float, weight_decay: float, aux_weight: float) -> None:
        if device != "auto":
            os.environ["OVERLOCK_DEVICE"] = device
        from utils.jittor_env import DEVICE, jt  # configures Jittor before its first import

        self.jt, self.device = jt, DEVICE
        self.lr, self.weight_decay, self.aux_weight = lr, weight_decay, aux_weight
        self.distributed = bool(jt.in_mpi)  # started by mpirun
        if self.distributed:
            self.rank, self.world_size = jt.rank, jt.world_size

    def build(self, model: str, num_classes: int, seed: int, sync_bn: bool = False) -> None:
        from models import overlock_jittor

        jt = self.jt
        # Jittor would add 2591 x rank to the seed; every process starts from the same weights.
        jt.set_global_seed(seed, different_seed_for_mpi=False)
        self.model = getattr(overlock_jittor, model)(num_classes=num_classes, sync_bn=sync_bn)
        self.params = {n: p for n, p in self.model.named_parameters() if not p.is_stop_grad()}
        # Jittor's AdamW update equals torch's (decoupled decay p *= 1 - lr*wd, bias-corrected
        # moments); its default weight_decay is 0, so the value is always passed explicitly.
        self.optimizer = jt.optim.AdamW(
            list(self.params.values()),
            lr=self.lr,
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=self.weight_decay,
        )

    def describe(self) -> dict[str, Any]:
        return {"framework": "jittor", "version": self.jt.__version__, "device": self.device}

    def model_state(self) -> dict[str, np.ndarray]:
        return canonical_state({k: v.numpy() for k, v in self.model.state_dict().items()})

    def load_model_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.model.load_state_dict({k: np.array(v) for k, v in state.items()})

    def _moments(self) -> tuple[list, list]:
        group = self.optimizer.param_groups[0]
        return group["m"], group["values"]  # Jittor's names for exp_avg, exp_avg_sq

    def optimizer_state(self) -> dict[str, Any]:
        exp_avg, exp_avg_sq = self._moments()
        names = list(self.params)
        return {
            "step": int(self.optimizer.n_step),
            "exp_avg": {n: m.numpy() for n, m in zip(names, exp_avg, strict=True)},
            "exp_avg_sq": {n: v.numpy() for n, v in zip(names, exp_avg_sq, strict=True)},
        }

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        exp_avg, exp_avg_sq = self._moments()
        for name, m, v in zip(self.params, exp_avg, exp_avg_sq, strict=True):
            m.assign(np.array(state["exp_avg"][name]))
            v.assign(np.array(state["exp_avg_sq"][name]))
        self.optimizer.n_step = int(state["step"])

    def train_step(
        self, images: np.ndarray, labels: np.ndarray, loss_scale: float = 1.0
    ) -> tuple[float, float, float]:
        jt = self.jt
        self.model.train()
        out = self.model(jt.array(images))
        y = jt.array(labels)
        loss_main = jt.nn.cross_entropy_loss(out["main"], y)
        loss_aux = jt.nn.cross_entropy_loss(out["aux"], y)
        loss = loss_main + self.aux_weight * loss_aux
        # Under MPI the optimizer averages the gradients over processes (and broadcasts rank 0's
        # weights at its first step), as DDP does.
        self.optimizer.step(loss * loss_scale if loss_scale != 1.0 else loss)
        # Run the lazy weight and moment updates now: fused into the next forward they round
        # differently from loaded weights, and a resumed run would drift from an unbroken one.
        jt.sync_all()
        total, main, aux = (v.item() for v in (loss, loss_main, loss_aux))
        return total, main, aux

    def eval_logits(self, images: np.ndarray) -> np.ndarray:
        self.model.eval()
        with self.jt.no_grad():
            return self.model(self.jt.array(images)).numpy()

    def all_reduce_sum(self, values: Sequence[float]) -> np.ndarray:
        if not self.distributed:
            return super().all_reduce_sum(values)
        return self.jt.array(np.array(values, dtype=np.float64)).mpi_all_reduce("add").numpy()

    def barrier(self) -> None:
        self.all_reduce_sum([0.0])

    def broadcast_buffers(self) -> None:
        if self.distributed:
            for name, var in self.model.state_dict().items():
                if name not in self.params:
                    var.assign(var.mpi_broadcast(0))
            self.jt.sync_all()


def main(argv: list[str] | None = None) -> int:
    args = build_parser("jittor", __doc__).parse_args(argv)

    def run() -> None:
        backend = JittorBackend(args.device, args.lr, args.weight_decay, args.aux_weight)
        run_training(args, backend)

    return main_guard(run)


if __name__ == "__main__":
    sys.exit(main())
