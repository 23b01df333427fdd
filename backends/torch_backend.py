"""The PyTorch backend: device choice, models with given weights, stage outputs and their
gradients (ERF, Grad-CAM), the AdamW training step (AMP, gradient checkpointing, EMA, clipping)
and DistributedDataParallel under torchrun (NCCL on GPUs, gloo on CPU).
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from backends.base import (
    Backend,
    ClassChoice,
    StateDict,
    centre_unit,
    one_hot,
    param_groups,
)
from core.errors import UsageError
from models import overlock_torch

StageForward = Callable[[torch.Tensor], Sequence[torch.Tensor]]  # input -> stage maps
CamForward = Callable[[torch.Tensor], tuple[torch.Tensor, Sequence[torch.Tensor]]]


def pick_device(device: str) -> torch.device:
    """The torch device for ``device`` ("auto": CUDA when available)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: PyTorch finds no CUDA device")
    return torch.device(device)


def load_model(
    state: StateDict, model_name: str, num_classes: int, device: torch.device, reparam: bool = False
) -> nn.Module:
    """The named OverLoCK variant with these weights on ``device``, in eval mode (BatchNorm uses
    its running statistics); ``reparam``: merged into the deploy form.
    """
    model = getattr(overlock_torch, model_name)(num_classes=num_classes)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    model.eval()
    if reparam:
        model.reparam()
    return model.to(device)


def forward_stages(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and the four stage outputs (the last block of each ``STAGE_MODULES`` entry) in one
    pass: timm's ``forward_intermediates``, then the head on its final map, which is what the
    model's own eval-mode forward computes.
    """
    final, maps = model.forward_intermediates(x)
    return model.forward_head(final), list(maps)


def stage_input_grads(
    forward: StageForward, images: np.ndarray, device: torch.device
) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """For each map ``forward`` returns: d(channel-mean centre unit)/d(input), N x 3 x H x W,
    and the map's (h, w). The centre units of all images are summed into one scalar: in eval
    mode the images do not interact, so one backward pass gives every image its own gradient.
    """
    x = torch.from_numpy(images).to(device).requires_grad_(True)
    maps = forward(x)
    grads = []
    for s, fmap in enumerate(maps):
        cy, cx = centre_unit(fmap.shape)
        target = fmap[:, :, cy, cx].mean(dim=1).sum()
        (grad,) = torch.autograd.grad(target, x, retain_graph=s < len(maps) - 1)
        grads.append(grad.cpu().numpy())
    return grads, [tuple(fmap.shape[2:]) for fmap in maps]


def activations_and_grads(
    forward: CamForward, images: np.ndarray, choose: ClassChoice, device: torch.device
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """(logits, classes = ``choose(logits)``, stage outputs, d class score / d stage output) as
    numpy; ``forward(x)`` returns (logits, stage outputs). The scores of all images are summed
    into one scalar: in eval mode images do not interact, so each gets its own gradient.
    """
    x = torch.from_numpy(images).to(device).requires_grad_(True)  # keeps a graph if weights froze
    logits, maps = forward(x)
    chosen = np.asarray(choose(logits.detach().cpu().numpy()), dtype=np.int64)
    selector = torch.from_numpy(one_hot(chosen, logits.shape[1])).to(device)
    score = (logits * selector).sum()
    grads = torch.autograd.grad(score, maps)
    as_numpy = [t.detach().cpu().numpy() for t in (logits, *maps, *grads)]
    n = len(maps)
    return as_numpy[0], chosen, as_numpy[1 : 1 + n], as_numpy[1 + n :]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE with int labels, or with soft targets (mixup, smoothing): mean of -sum(t * log p)."""
    if y.ndim == 2:
        return torch.sum(-y * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, y)


def _tensors(state: StateDict) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


def _arrays(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


class TorchBackend(Backend):
    """PyTorch behind ``backends.base.Backend``."""

    name = "torch"
    suffix = ".pth"

    def __init__(
        self,
        device: str = "auto",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        aux_weight: float = 0.4,
        clip_grad: float = 0.0,
        amp: bool = False,
        compile_model: bool = False,
        compile_dynamic: bool | None = None,
        channels_last: bool = False,
    ) -> None:
        self.torch_device = pick_device(device)
        # compile_dynamic is torch.compile's ``dynamic`` (None: shapes that change once are
        # recompiled as dynamic; False: one static graph per shape, the fastest per call).
        self.compile_model, self.compile_dynamic = compile_model, compile_dynamic
        self.channels_last = channels_last
        self._first_call_s: dict[str, float] = {}
        self.lr, self.weight_decay, self.aux_weight = lr, weight_decay, aux_weight
        self.clip_grad, self.amp = clip_grad, amp
        on_cuda = self.torch_device.type == "cuda"
        # The official run's float16 + GradScaler on CUDA; the CPU autocasts to bfloat16 only.
        self.amp_dtype = torch.float16 if on_cuda else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda") if amp and on_cuda else None
        self.ema: nn.Module | None = None
        self.distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # torchrun's
        if self.distributed:
            if on_cuda:
                self.torch_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
                torch.cuda.set_device(self.torch_device)
            dist.init_process_group("nccl" if on_cuda else "gloo")
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.device = str(self.torch_device)

    # --- a model with given weights: evaluation and figures ---------------------------------
    def load(
        self, state: StateDict, model_name: str, num_classes: int, reparam: bool = False
    ) -> None:
        self.model = self._laid_out(
            load_model(state, model_name, num_classes, self.torch_device, reparam)
        )
        self.evaluated = self._compiled(self.model) if self.compile_model else self.model

    def stage_input_grads(
        self, images: np.ndarray
    ) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
        def forward(x: Any) -> Sequence[Any]:
            return self.model.forward_intermediates(x, intermediates_only=True)

        return stage_input_grads(forward, images, self.torch_device)

    def activations_and_grads(
        self, images: np.ndarray, choose: ClassChoice
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        forward = lambda x: forward_stages(self.model, x)  # noqa: E731
        return activations_and_grads(forward, images, choose, self.torch_device)

    # --- training ------------------------------------------------------------------------
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
        self.model = self._laid_out(network.to(self.torch_device))
        self.trained = self.model  # what train_step calls: the DDP wrapper when distributed
        if self.distributed:
            # DDP warns that depthwise weights' gradients (C, 1, k, k) have other strides than its
            # buckets: they differ along the size-1 axis only, the same memory layout.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
            # Buffers are not broadcast at each forward: the loop gives every process rank 0's
            # BatchNorm statistics before validation, as the Jittor backend does (Jittor has no
            # such hook).
            on_cuda = self.torch_device.type == "cuda"
            self.trained = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.torch_device.index] if on_cuda else None,
                forward_sync_buffers=False,
            )
        self.evaluated: nn.Module = self.model
        if self.compile_model:
            # One compiled wrapper per calling module: the plain model (evaluation) and, under
            # torchrun, the DDP wrapper around it (training; DDP's optimiser splits the graph at
            # its gradient buckets). The weights stay those of self.model, as do the state keys.
            self.evaluated = self._compiled(self.model)
            self.trained = self._compiled(self.trained) if self.distributed else self.evaluated
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

    def _laid_out(self, model: nn.Module) -> nn.Module:
        """``model``, its 4-d weights in channels-last order when asked for (the convolutions
        then also give channels-last outputs; the values are the same)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def _compiled(self, module: nn.Module) -> nn.Module:
        return torch.compile(module, dynamic=self.compile_dynamic)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def reseed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def ema_state(self) -> dict[str, np.ndarray] | None:
        return None if self.ema is None else _arrays(self.ema)

    def load_ema_state(self, state: StateDict) -> None:
        assert self.ema is not None, "no EMA: build with ema_decay > 0"
        self.ema.load_state_dict(_tensors(state), strict=True)

    def describe(self) -> dict[str, Any]:
        return {"framework": "torch", "version": torch.__version__, "device": self.device}

    def model_state(self) -> dict[str, np.ndarray]:
        return _arrays(self.model)

    def load_model_state(self, state: StateDict) -> None:
        self.model.load_state_dict(_tensors(state), strict=True)

    def optimizer_state(self) -> dict[str, Any]:
        state = self.optimizer.state
        steps = [int(state[p]["step"]) for p in self.params.values() if p in state]

        def moments(which: str) -> dict[str, np.ndarray]:
            # Before the first step (a stop that came first) AdamW holds no moments: they are
            # the zeros it starts from, so a resumed run still takes the very same first step.
            return {
                n: (state[p][which] if p in state else torch.zeros_like(p)).detach().cpu().numpy()
                for n, p in self.params.items()
            }

        return {
            "step": max(steps, default=0),
            "exp_avg": moments("exp_avg"),
            "exp_avg_sq": moments("exp_avg_sq"),
        }

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        def moment(name: str, which: str) -> torch.Tensor:
            return torch.from_numpy(np.array(state[which][name])).to(self.torch_device)

        for name, param in self.params.items():
            self.optimizer.state[param] = {
                "step": torch.tensor(float(state["step"])),
                "exp_avg": moment(name, "exp_avg"),
                "exp_avg_sq": moment(name, "exp_avg_sq"),
            }

    def compile_times(self) -> dict[str, Any]:
        if not self.compile_model or len(self._first_call_s) < 2:
            return {}
        return {"compiler": "torch.compile", **self._first_call_s}

    def _first_call_timed(self, key: str, call: Callable[[], Any]) -> Any:
        """``call()``; with --compile the first one's time (compiling included) is kept."""
        if not self.compile_model or key in self._first_call_s:
            return call()
        t0 = time.perf_counter()
        result = call()  # its result is on the host: the device's work is done
        self._first_call_s[key] = time.perf_counter() - t0
        return result

    def train_step(
        self, images: np.ndarray, labels: np.ndarray, loss_scale: float = 1.0
    ) -> tuple[float, float, float]:
        return self._first_call_timed(
            "train_step_s", lambda: self._train_step(images, labels, loss_scale)
        )

    def _train_step(
        self, images: np.ndarray, labels: np.ndarray, loss_scale: float
    ) -> tuple[float, float, float]:
        self.model.train()
        x = torch.from_numpy(images).to(self.torch_device, non_blocking=True)
        y = torch.from_numpy(labels).to(self.torch_device, non_blocking=True)
        with torch.autocast(self.torch_device.type, dtype=self.amp_dtype, enabled=self.amp):
            out = self.trained(x)
            loss_main = cross_entropy(out["main"], y)
            loss_aux = cross_entropy(out["aux"], y)
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
        if ema:  # the EMA copy runs eagerly: it only evaluates, once per epoch
            assert self.ema is not None, "no EMA: build with ema_decay > 0"
            return self._logits(self.ema, images)
        return self._first_call_timed("eval_s", lambda: self._logits(self.evaluated, images))

    def _logits(self, model: nn.Module, images: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.inference_mode():
            return model(torch.from_numpy(images).to(self.torch_device)).float().cpu().numpy()

    # --- collectives ---------------------------------------------------------------------
    def all_reduce_sum(self, values: Sequence[float]) -> np.ndarray:
        if not self.distributed:
            return super().all_reduce_sum(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.torch_device)
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
