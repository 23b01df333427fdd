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

from backends.base import Backend, param_groups
from core.cli import main_guard
from core.errors import UsageError
from engine.loop import build_parser, run_training
from models.weights import canonical_state


class JittorBackend(Backend):
    name = "jittor"
    suffix = ".pkl"

    def __init__(
        self,
        device: str,
        lr: float,
        weight_decay: float,
        aux_weight: float,
        clip_grad: float = 0.0,
        amp: bool = False,
    ) -> None:
        if amp:
            raise UsageError(
                "--amp: Jittor 1.3.11 has no autocast-style mixed precision (its fp16 mode "
                "casts the weights); train in float32 (--no-amp)"
            )
        if device != "auto":
            os.environ["OVERLOCK_DEVICE"] = device
        from core.jittor_env import DEVICE, jt  # configures Jittor before its first import

        self.jt, self.device = jt, DEVICE
        self.lr, self.weight_decay, self.aux_weight = lr, weight_decay, aux_weight
        self.clip_grad = clip_grad
        self.ema: Any = None
        self.distributed = bool(jt.in_mpi)  # started by mpirun
        if self.distributed:
            self.rank, self.world_size = jt.rank, jt.world_size

    def build(
        self,
        model: str,
        num_classes: int,
        seed: int,
        sync_bn: bool = False,
        drop_path: float = 0.0,
        grad_checkpoint: Sequence[int] = (0, 0, 0, 0),
        decay_1d: bool = True,
        ema_decay: float = 0.0,
    ) -> None:
        from models import overlock_jittor

        if any(grad_checkpoint):
            raise UsageError(
                "--grad-checkpoint: Jittor 1.3.11 has no activation recomputation; drop it "
                "(it only saves memory: the gradients are the same without it)"
            )
        jt = self.jt
        # Jittor would add 2591 x rank to the seed; every process starts from the same weights.
        jt.set_global_seed(seed, different_seed_for_mpi=False)
        make = getattr(overlock_jittor, model)
        options = {"num_classes": num_classes, "sync_bn": sync_bn, "drop_path_rate": drop_path}
        self.model = make(**options)
        self.params = {n: p for n, p in self.model.named_parameters() if not p.is_stop_grad()}
        # Jittor's AdamW update equals torch's (decoupled decay p *= 1 - lr*wd, bias-corrected
        # moments); its default weight_decay is 0, so the value is always passed explicitly.
        self.optimizer = jt.optim.AdamW(
            param_groups(self.params, decay_1d),
            lr=self.lr,
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=self.weight_decay,
        )
        name_of = {id(p): n for n, p in self.params.items()}
        # (name, exp_avg, exp_avg_sq) of every parameter; "m" and "values" are Jittor's names.
        self._moments = [
            (name_of[id(p)], m, v)
            for group in self.optimizer.param_groups
            for p, m, v in zip(group["params"], group["m"], group["values"], strict=True)
        ]
        self.ema_decay = ema_decay
        if ema_decay > 0:
            self.ema = make(**options)
            # A copy through numpy: loading Vars would share them, and stop_grad below would
            # then freeze the model's own parameters.
            self.ema.load_state_dict({k: v.numpy() for k, v in self.model.state_dict().items()})
            self.ema.eval()
            for p in self.ema.parameters():
                p.stop_grad()

    def set_lr(self, lr: float) -> None:
        self.optimizer.lr = lr  # the groups carry no "lr" of their own

    def reseed(self, seed: int) -> None:
        self.jt.set_seed(seed)

    def ema_state(self) -> dict[str, np.ndarray] | None:
        if self.ema is None:
            return None
        return canonical_state({k: v.numpy() for k, v in self.ema.state_dict().items()})

    def load_ema_state(self, state: Mapping[str, np.ndarray]) -> None:
        assert self.ema is not None, "no EMA: build with ema_decay > 0"
        self.ema.load_state_dict({k: np.array(v) for k, v in state.items()})

    def describe(self) -> dict[str, Any]:
        return {"framework": "jittor", "version": self.jt.__version__, "device": self.device}

    def model_state(self) -> dict[str, np.ndarray]:
        return canonical_state({k: v.numpy() for k, v in self.model.state_dict().items()})

    def load_model_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.model.load_state_dict({k: np.array(v) for k, v in state.items()})

    def optimizer_state(self) -> dict[str, Any]:
        return {
            "step": int(self.optimizer.n_step),
            "exp_avg": {n: m.numpy() for n, m, _ in self._moments},
            "exp_avg_sq": {n: v.numpy() for n, _, v in self._moments},
        }

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        for name, m, v in self._moments:
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
        loss_main = _cross_entropy(jt, out["main"], y)
        loss_aux = _cross_entropy(jt, out["aux"], y)
        loss = loss_main + self.aux_weight * loss_aux
        # Under MPI the optimizer averages the gradients over processes (and broadcasts rank 0's
        # weights at its first step), as DDP does.
        scaled = loss * loss_scale if loss_scale != 1.0 else loss
        if self.clip_grad > 0:
            self.optimizer.backward(scaled)
            self._clip_gradients()
            self.optimizer.step()
        else:
            self.optimizer.step(scaled)
        if self.ema is not None:
            self._update_ema()
        # Run the lazy weight and moment updates now: fused into the next forward they round
        # differently from loaded weights, and a resumed run would drift from an unbroken one.
        jt.sync_all()
        total, main, aux = (v.item() for v in (loss, loss_main, loss_aux))
        return total, main, aux

    def _clip_gradients(self) -> None:
        # torch's clip_grad_norm_: the 2-norm of the per-tensor 2-norms. Jittor's own
        # Optimizer.clip_grad_norm sums the squares of all gradients in one float32 pass,
        # which came out 8e-4 high on XXT.
        jt = self.jt
        grads = [
            g
            for group in self.optimizer.param_groups
            for p, g in zip(group["params"], group["grads"], strict=True)
            if not p.is_stop_grad()
        ]
        norms = jt.concat([(g * g).sum().sqrt().reshape(1) for g in grads])
        coef = (self.clip_grad / (norms.sqr().sum().sqrt() + 1e-6)).minimum(1.0)
        for g in grads:
            g.update(g * coef)

    def _update_ema(self) -> None:
        # timm's ModelEmaV2: every state entry, buffers included, e = d * e + (1 - d) * m;
        # integer entries are computed in float32 and truncated back, as torch's copy_ does.
        d = self.ema_decay
        model_state = self.model.state_dict()
        for name, e in self.ema.state_dict().items():
            m = model_state[name].detach()
            if e.dtype.is_float():
                e.update(d * e + (1.0 - d) * m)
            else:
                e.update((d * e.float32() + (1.0 - d) * m.float32()).cast(e.dtype))

    def eval_logits(self, images: np.ndarray, ema: bool = False) -> np.ndarray:
        model = self.ema if ema else self.model
        assert model is not None, "no EMA: build with ema_decay > 0"
        model.eval()
        with self.jt.no_grad():
            return model(self.jt.array(images)).numpy()

    def all_reduce_sum(self, values: Sequence[float]) -> np.ndarray:
        if not self.distributed:
            return super().all_reduce_sum(values)
        return self.jt.array(np.array(values, dtype=np.float64)).mpi_all_reduce("add").numpy()

    def barrier(self) -> None:
        self.all_reduce_sum([0.0])

    def broadcast_buffers(self) -> None:
        if self.distributed:
            for model in (self.model, self.ema) if self.ema is not None else (self.model,):
                for name, var in model.state_dict().items():
                    if name not in self.params:
                        var.assign(var.mpi_broadcast(0))
            self.jt.sync_all()


def _cross_entropy(jt: Any, logits: Any, y: Any) -> Any:
    """CE with int labels, or with soft targets (mixup, smoothing): mean of -sum(t * log p)."""
    if y.ndim == 2:
        return (-(y * jt.nn.log_softmax(logits, dim=1))).sum(dim=1).mean()
    return jt.nn.cross_entropy_loss(logits, y)


def main(argv: list[str] | None = None) -> int:
    args = build_parser("jittor", __doc__).parse_args(argv)

    def run() -> None:
        backend = JittorBackend(
            args.device, args.lr, args.weight_decay, args.aux_weight, args.clip_grad, args.amp
        )
        run_training(args, backend)

    return main_guard(run)


if __name__ == "__main__":
    sys.exit(main())
