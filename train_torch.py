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

import copy
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from backends.base import Backend, param_groups
from core.cli import main_guard
from engine.loop import build_parser, run_training
from models import overlock_torch


class TorchBackend(Backend):
    name = "torch"
    suffix = ".pth"

    def __init__(
        self,
        device: str,
        lr: float,
        weight_decay: float,
        aux_weight: float,
        clip_grad: float = 0.0,
        amp: bool = False,
    ) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.lr, self.weight_decay, self.aux_weight = lr, weight_decay, aux_weight
        self.clip_grad, self.amp = clip_grad, amp
        # The official run's float16 + GradScaler on CUDA; the CPU autocasts to bfloat16 only.
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda") if amp and self.device.type == "cuda" else None
        self.ema: nn.Module | None = None
        self.distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # torchrun's
        if self.distributed:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

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
        torch.manual_seed(seed)
        network = getattr(overlock_torch, model)(
            num_classes=num_classes,
            sync_bn=sync_bn,
            drop_path_rate=drop_path,
            use_checkpoint=list(grad_checkpoint),
        )
        self.model = network.to(self.device)
        self.trained = self.model  # what train_step calls: the DDP wrapper when distributed
        if self.distributed:
            # DDP warns that depthwise weights' gradients (C, 1, k, k) have other strides than its
            # buckets: they differ along the size-1 axis only, the same memory layout.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
            # Buffers are not broadcast at each forward: the loop gives every process rank 0's
            # BatchNorm statistics before validation, as train.py does (Jittor has no such hook).
            self.trained = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                forward_sync_buffers=False,
            )
        self.params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(
            param_groups(self.params, decay_1d),
            lr=self.lr,
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=self.weight_decay,
        )
        self.ema_decay = ema_decay
        if ema_decay > 0:
            self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def reseed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def ema_state(self) -> dict[str, np.ndarray] | None:
        if self.ema is None:
            return None
        return {k: v.detach().cpu().numpy() for k, v in self.ema.state_dict().items()}

    def load_ema_state(self, state: Mapping[str, np.ndarray]) -> None:
        assert self.ema is not None, "no EMA: build with ema_decay > 0"
        tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
        self.ema.load_state_dict(tensors, strict=True)

    def describe(self) -> dict[str, Any]:
        return {"framework": "torch", "version": torch.__version__, "device": str(self.device)}

    def model_state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def load_model_state(self, state: Mapping[str, np.ndarray]) -> None:
        tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
        self.model.load_state_dict(tensors, strict=True)

    def optimizer_state(self) -> dict[str, Any]:
        state = self.optimizer.state
        steps = [int(state[p]["step"]) for p in self.params.values() if p in state]
        return {
            "step": max(steps, default=0),
            "exp_avg": {n: state[p]["exp_avg"].cpu().numpy() for n, p in self.params.items()},
            "exp_avg_sq": {n: state[p]["exp_avg_sq"].cpu().numpy() for n, p in self.params.items()},
        }

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        for name, param in self.params.items():
            self.optimizer.state[param] = {
                "step": torch.tensor(float(state["step"])),
                "exp_avg": torch.from_numpy(np.array(state["exp_avg"][name])).to(self.device),
                "exp_avg_sq": torch.from_numpy(np.array(state["exp_avg_sq"][name])).to(self.device),
            }

    def train_step(
        self, images: np.ndarray, labels: np.ndarray, loss_scale: float = 1.0
    ) -> tuple[float, float, float]:
        self.model.train()
        x = torch.from_numpy(images).to(self.device, non_blocking=True)
        y = torch.from_numpy(labels).to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            out = self.trained(x)
            loss_main = _cross_entropy(out["main"], y)
            loss_aux = _cross_entropy(out["aux"], y)
            loss = loss_main + self.aux_weight * loss_aux
        self.optimizer.zero_grad(set_to_none=True)
        scaled = loss * loss_scale if loss_scale != 1.0 else loss
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        if self.clip_grad > 0:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients
            nn.utils.clip_grad_norm_(self.params.values(), self.clip_grad)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self._update_ema()
        total, main, aux = torch.stack([loss, loss_main, loss_aux]).tolist()  # one sync
        return total, main, aux

    def _update_ema(self) -> None:
        # timm's ModelEmaV2: every state entry, buffers included, e = d * e + (1 - d) * m.
        assert self.ema is not None
        d = self.ema_decay
        with torch.no_grad():
            model_state = self.model.state_dict()
            for name, e in self.ema.state_dict().items():
                e.copy_(d * e + (1.0 - d) * model_state[name])

    def eval_logits(self, images: np.ndarray, ema: bool = False) -> np.ndarray:
        model = self.ema if ema else self.model
        assert model is not None, "no EMA: build with ema_decay > 0"
        model.eval()
        with torch.inference_mode():
            return model(torch.from_numpy(images).to(self.device)).float().cpu().numpy()

    def all_reduce_sum(self, values: Sequence[float]) -> np.ndarray:
        if not self.distributed:
            return super().all_reduce_sum(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.cpu().numpy()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_buffers(self) -> None:
        if self.distributed:
            for model in (self.model, self.ema) if self.ema is not None else (self.model,):
                for buffer in model.buffers():
                    dist.broadcast(buffer, src=0)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE with int labels, or with soft targets (mixup, smoothing): mean of -sum(t * log p)."""
    if y.ndim == 2:
        return torch.sum(-y * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, y)


def main(argv: list[str] | None = None) -> int:
    args = build_parser("torch", __doc__).parse_args(argv)

    def run() -> None:
        backend = TorchBackend(
            args.device, args.lr, args.weight_decay, args.aux_weight, args.clip_grad, args.amp
        )
        run_training(args, backend)

    return main_guard(run)


if __name__ == "__main__":
    sys.exit(main())
