"""The interface between the framework-free code (engine, analysis) and a framework.

Everything that crosses it is numpy: batches in; losses, logits, weights and gradients out. So the
training loop, the evaluation and the figures are written once, and both frameworks see the same
batches in the same order. ``jittor_backend.JittorBackend`` and ``torch_backend.TorchBackend``
implement it.

Data parallelism is the framework's own engine (torch DDP under torchrun, Jittor's MPI under
mpirun): a backend learns ``rank`` and ``world_size`` from the launcher at construction, averages
the gradients over processes in ``train_step`` and offers the few collectives the loop needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

StateDict = Mapping[str, np.ndarray]
ClassChoice = Callable[[np.ndarray], np.ndarray]  # logits (N x K) -> the class to explain per image

# The module whose last block ends each stage, as named in both OverLoCK twins: stages 1-2 are
# the Base-Net, 3-4 the Focus-Net (whose blocks return (x, context); x is the stage output).
# The backends read these four maps from the models' ``forward_intermediates`` (timm's API).
STAGE_MODULES = ("blocks1", "blocks2", "sub_blocks3", "sub_blocks4")


def centre_unit(shape: Sequence[int]) -> tuple[int, int]:
    """Index of the centre unit of an (..., h, w) map: (h // 2, w // 2) (the ERF's target)."""
    h, w = shape[-2:]
    return h // 2, w // 2


def one_hot(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """float32 N x K selector: the class score of each image is ``(logits * one_hot).sum()``."""
    out = np.zeros((len(classes), num_classes), dtype=np.float32)
    out[np.arange(len(classes)), classes] = 1.0
    return out


def decays(name: str, shape: tuple[int, ...], decay_1d: bool) -> bool:
    """Whether weight decay applies to parameter ``name``: always with ``decay_1d``, otherwise
    not on biases and 1-D parameters (timm's ``param_groups_weight_decay``, as the official run).
    """
    return decay_1d or not (len(shape) <= 1 or name.endswith(".bias"))


def param_groups(params: Mapping[str, Any], decay_1d: bool) -> list[dict[str, Any]]:
    """AdamW parameter groups of either framework: the decayed parameters (the optimizer's
    weight decay), then the exempt ones with weight decay 0; empty groups are left out.
    """
    groups = [
        {"params": [p for n, p in params.items() if decays(n, tuple(p.shape), decay_1d) == on]}
        | ({} if on else {"weight_decay": 0.0})
        for on in (True, False)
    ]
    return [g for g in groups if g["params"]]


class Backend(ABC):
    """The framework half of every script. ``Backend(device)`` is enough for evaluation and
    figures (``load`` then ``eval_logits`` / ``stage_input_grads`` / ``activations_and_grads``);
    training also passes the optimiser settings and calls ``build``.
    """

    name: str  # "jittor" or "torch"
    suffix: str  # checkpoint extension: ".pkl" or ".pth"
    device: str  # the device in use, as the framework names it
    rank: int = 0
    world_size: int = 1

    @abstractmethod
    def __init__(
        self,
        device: str = "auto",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        aux_weight: float = 0.4,
        clip_grad: float = 0.0,
        amp: bool = False,
        compile_model: bool = False,
    ) -> None:
        """Pick ``device``: "auto" (CUDA when available), "cpu" or "cuda" (a one-line error when
        the machine has none). ``lr``, ``weight_decay``, ``aux_weight``: the AdamW step and the
        loss of ``train_step``; ``clip_grad``: clip the gradients' total 2-norm to it (0: off);
        ``amp``: mixed precision; ``compile_model``: run the built model through the
        framework's graph compiler where it has one (``compile_times`` then reports it). Data
        parallelism is set up here, from the launcher's environment. Evaluation and figures
        pass ``device`` only.
        """

    # --- a model with given weights: evaluation and figures ---------------------------------
    @abstractmethod
    def load(
        self, state: StateDict, model_name: str, num_classes: int, reparam: bool = False
    ) -> None:
        """Build ``model_name`` (a ``models.variants.ALL_MODEL_NAMES`` name) with these weights
        in evaluation mode (BatchNorm uses its running statistics); ``reparam``: then merge
        the branches into the deploy form. It becomes the model of ``eval_logits``,
        ``stage_input_grads`` and ``activations_and_grads``.
        """

    @abstractmethod
    def stage_input_grads(
        self, images: np.ndarray
    ) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
        """For each of the four stage outputs (the last block of each ``STAGE_MODULES`` entry):
        d(channel mean at ``centre_unit``)/d(input), N x 3 x H x W, and the stage's (h, w). The
        units of all images are summed into one scalar: in eval mode images do not interact, so
        one backward gives each its gradient.
        """

    @abstractmethod
    def activations_and_grads(
        self, images: np.ndarray, choose: ClassChoice
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """(logits, explained classes = ``choose(logits)`` (int64 N, the logits as numpy),
        the four stage outputs, d class score / d stage output), as numpy. The chosen scores of
        all images are summed into one scalar, as in ``stage_input_grads``.
        """

    # --- training ------------------------------------------------------------------------
    @abstractmethod
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
        """Create the model (weights seeded by ``seed``, the same on every process) and its
        AdamW optimiser. ``sync_bn``: BatchNorm statistics over the global batch; ``decay_1d``:
        weight decay on biases and 1-D parameters too (timm exempts them); ``ema_decay`` > 0
        keeps an EMA copy of the model (timm's ModelEmaV2), updated after every step.
        """

    @abstractmethod
    def set_lr(self, lr: float) -> None:
        """The learning rate from now on (every parameter group)."""

    @abstractmethod
    def reseed(self, seed: int) -> None:
        """Seed the framework's RNG (drop path) so a step's randomness depends on its position
        in the run only: runs are repeatable and a resumed run continues bit for bit.
        """

    @abstractmethod
    def ema_state(self) -> dict[str, np.ndarray] | None:
        """The EMA model's state, or None without an EMA."""

    @abstractmethod
    def load_ema_state(self, state: StateDict) -> None:
        """Set the EMA model's state (built with ``ema_decay`` > 0)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Framework, version and device, for config.json and the start line."""

    @abstractmethod
    def model_state(self) -> dict[str, np.ndarray]:
        """The model's state dict in the official (PyTorch) layout."""

    @abstractmethod
    def load_model_state(self, state: StateDict) -> None:
        """Set the model's weights and buffers."""

    @abstractmethod
    def optimizer_state(self) -> dict[str, Any]:
        """{'step': int, 'exp_avg': {param: array}, 'exp_avg_sq': {param: array}}."""

    @abstractmethod
    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        """Set AdamW's step count and moments (as ``optimizer_state`` returns them)."""

    @abstractmethod
    def train_step(
        self, images: np.ndarray, labels: np.ndarray, loss_scale: float = 1.0
    ) -> tuple[float, float, float]:
        """One AdamW step on CE(main) + aux_weight * CE(aux) of this process's shard; returns the
        shard's (total, main, aux) mean losses. ``labels``: int64 N, or float32 N x C soft targets
        (mixup, label smoothing: CE = -sum(t * log_softmax)). The gradient is that of
        ``loss_scale`` x the loss, averaged over processes (uneven shards weigh by their size),
        clipped if asked; then the EMA, if any, is updated.
        """

    @abstractmethod
    def eval_logits(self, images: np.ndarray, ema: bool = False) -> np.ndarray:
        """Main-head logits (float32 N x classes) in evaluation mode, without gradients, of the
        built or loaded model (of the EMA model if ``ema``)."""

    def start_notes(self) -> list[str]:
        """Lines for the start of a run about this framework or launcher (rank 0 prints them)."""
        return []

    def compile_times(self) -> dict[str, Any]:
        """With ``compile_model``: {"compiler": its name, "train_step_s": the first training
        step's seconds, "eval_s": the first evaluation's}, compilation included, once both ran;
        {} otherwise."""
        return {}

    # --- collectives: identities in one process ------------------------------------------
    def all_reduce_sum(self, values: Sequence[float]) -> np.ndarray:
        """Element-wise sum over all processes (float64); a copy in one process."""
        return np.array(values, dtype=np.float64)

    def barrier(self) -> None:
        """Wait until every process gets here."""
        return None

    def broadcast_buffers(self) -> None:
        """Give every process rank 0's BatchNorm statistics (each tracks its own shard's)."""
        return None

    def close(self) -> None:
        """Leave the process group, if any."""
        return None
