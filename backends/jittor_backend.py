"""The Jittor backend: device choice, models with given weights, stage outputs and their
gradients (ERF, Grad-CAM), the AdamW training step (EMA, clipping) and Jittor's MPI data
parallelism under mpirun (NCCL on GPUs).

Jittor is imported only through ``core.jittor_env``, and only once the device is chosen:
``pick_device`` sets ``OVERLOCK_DEVICE`` before the first import configures Jittor.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from backends.base import (
    Backend,
    ClassChoice,
    StateDict,
    centre_unit,
    one_hot,
    param_groups,
)
from core.errors import UsageError
from models.weights import canonical_state

# Seconds a stop signal needs under mpirun to end the step and save (see ``start_notes``).
MPI_STOP_GRACE_S = 30
StageForward = Callable[[Any], Sequence[Any]]  # jt.Var -> stage maps
CamForward = Callable[[Any], tuple[Any, Sequence[Any]]]  # jt.Var -> (logits, stage maps)


def pick_device(device: str) -> str:
    """Configure Jittor for ``device`` (before its first import) and return the one in use."""
    if device != "auto":
        os.environ["OVERLOCK_DEVICE"] = device
    from core.jittor_env import DEVICE

    return DEVICE


def load_model(state: StateDict, model_name: str, num_classes: int, reparam: bool = False) -> Any:
    """The named OverLoCK variant with these weights, in eval mode (BatchNorm uses its running
    statistics); ``reparam``: merged into the deploy form.
    """
    from models import overlock_jittor

    model = getattr(overlock_jittor, model_name)(num_classes=num_classes)
    model.load_state_dict({k: np.array(v) for k, v in state.items()})
    model.eval()
    if reparam:
        model.reparam()
    return model


def forward_stages(model: Any, x: Any) -> tuple[Any, list[Any]]:
    """Logits and the four stage outputs (the last block of each ``STAGE_MODULES`` entry) in one
    pass: timm's ``forward_intermediates``, then the head on its final map, which is what the
    model's own eval-mode forward computes.
    """
    final, maps = model.forward_intermediates(x)
    return model.forward_head(final), list(maps)


def stage_input_grads(
    forward: StageForward, images: np.ndarray
) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """For each map ``forward`` returns: d(channel-mean centre unit)/d(input), N x 3 x H x W,
    and the map's (h, w). The centre units of all images are summed into one scalar: in eval
    mode the images do not interact, so one backward pass gives every image its own gradient.
    """
    from core.jittor_env import jt

    x = jt.array(images)
    maps = forward(x)
    grads = []
    for fmap in maps:
        cy, cx = centre_unit(fmap.shape)
        target = fmap[:, :, cy, cx].mean(dim=1).sum()
        grads.append(jt.grad(target, x))
    as_numpy = [np.asarray(g) for g in jt.fetch_sync(grads)]  # one graph run for all stages
    return as_numpy, [tuple(fmap.shape[2:]) for fmap in maps]


def activations_and_grads(
    forward: CamForward, images: np.ndarray, choose: ClassChoice
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """(logits, classes = ``choose(logits)``, stage outputs, d class score / d stage output) as
    numpy; ``forward(x)`` returns (logits, stage outputs). The scores of all images are summed
    into one scalar: in eval mode images do not interact, so each gets its own gradient.
    """
    from core.jittor_env import jt

    x = jt.array(images)
    logits, maps = forward(x)
    chosen = np.asarray(choose(logits.numpy()), dtype=np.int64)
    selector = jt.array(one_hot(chosen, logits.shape[1]))
    score = (logits * selector).sum()
    grads = jt.grad(score, list(maps))
    as_numpy = [np.asarray(v) for v in jt.fetch_sync([logits, *maps, *grads])]
    n = len(maps)
    return as_numpy[0], chosen, as_numpy[1 : 1 + n], as_numpy[1 + n :]


def cross_entropy(jt: Any, logits: Any, y: Any) -> Any:
    """CE with int labels, or with soft targets (mixup, smoothing): mean of -sum(t * log p)."""
    if y.ndim == 2:
        return (-(y * jt.nn.log_softmax(logits, dim=1))).sum(dim=1).mean()
    return jt.nn.cross_entropy_loss(logits, y)


def _arrays(module: Any) -> dict[str, np.ndarray]:
    return canonical_state({k: v.numpy() for k, v in module.state_dict().items()})


class JittorBackend(Backend):
    """Jittor behind ``backends.base.Backend``."""

    name = "jittor"
    suffix = ".pkl"

    def __init__(
        self,
        device: str = "auto",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        aux_weight: float = 0.4,
        clip_grad: float = 0.0,
        amp: bool = False,
        compile_model: bool = False,  # Jittor always compiles and fuses its kernels: nothing to add
    ) -> None:
        if amp:
            raise UsageError(
                "--amp: Jittor 1.3.11 has no autocast-style mixed precision (its fp16 mode "
                "casts the weights); train in float32 (--no-amp)"
            )
        self.device = pick_device(device)
        from core.jittor_env import jt

        self.jt = jt
        self.lr, self.weight_decay, self.aux_weight = lr, weight_decay, aux_weight
        self.clip_grad = clip_grad
        self.ema: Any = None
        self.distributed = bool(jt.in_mpi)  # started by mpirun
        if self.distributed:
            self.rank, self.world_size = jt.rank, jt.world_size

    def start_notes(self) -> list[str]:
        # mpirun passes a Ctrl-C or SIGTERM on as SIGTERM odls_base_sigkill_timeout seconds
        # later and kills the processes as long after that: by default 1 s, too soon to save.
        grace = os.environ.get("OMPI_MCA_odls_base_sigkill_timeout", "1")
        if not self.distributed or (grace.isdigit() and int(grace) >= MPI_STOP_GRACE_S):
            return []
        return [
            f"note: mpirun kills the processes {grace} s after passing a Ctrl-C or SIGTERM on, "
            "too soon to save: launch with 'mpirun --mca odls_base_sigkill_timeout "
            f"{MPI_STOP_GRACE_S} ...' (or export OMPI_MCA_odls_base_sigkill_timeout="
            f"{MPI_STOP_GRACE_S}) for a saved stop; SIGUSR1/SIGUSR2 are passed on at once"
        ]

    # --- a model with given weights: evaluation and figures ---------------------------------
    def load(
        self, state: StateDict, model_name: str, num_classes: int, reparam: bool = False
    ) -> None:
        self.model = load_model(state, model_name, num_classes, reparam)

    def stage_input_grads(
        self, images: np.ndarray
    ) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
        def forward(x: Any) -> Sequence[Any]:
            return self.model.forward_intermediates(x, intermediates_only=True)

        return stage_input_grads(forward, images)

    def activations_and_grads(
        self, images: np.ndarray, choose: ClassChoice
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        return activations_and_grads(lambda x: forward_stages(self.model, x), images, choose)

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
        return None if self.ema is None else _arrays(self.ema)

    def load_ema_state(self, state: StateDict) -> None:
        assert self.ema is not None, "no EMA: build with ema_decay > 0"
        self.ema.load_state_dict({k: np.array(v) for k, v in state.items()})

    def describe(self) -> dict[str, Any]:
        return {"framework": "jittor", "version": self.jt.__version__, "device": self.device}

    def model_state(self) -> dict[str, np.ndarray]:
        return _arrays(self.model)

    def load_model_state(self, state: StateDict) -> None:
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
        loss_main = cross_entropy(jt, out["main"], y)
        loss_aux = cross_entropy(jt, out["aux"], y)
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

    # --- collectives ---------------------------------------------------------------------
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
