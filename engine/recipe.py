"""The official ImageNet-1k pre-training recipe of OverLoCK, framework-free (numpy only).

``recipe_for("t")`` gives the hyper-parameters of the official run for a variant, each with its
source (``SOURCES``; file:line in the official repository github.com/LMMMEng/OverLoCK at commit
2c8ab3b, or the timm 0.6.12 code it runs). ``format_recipe`` prints them. The numpy references
``lr_at``, ``ema_update``, ``clip_grad_norm`` and ``soft_target_cross_entropy`` state the exact
semantics the Jittor and PyTorch training steps are tested against.

Official run (``scripts/train_<v>_model.sh``): 8 GPUs x 256 images, timm 0.6.12 ``train.py``.
Notable details: ``--auto-lr`` replaces ``--lr`` by ``1e-3 x global batch / 1024`` (2e-3 for
2048); the cosine schedule is stepped once per epoch (``t_in_epochs``), and timm's
``create_scheduler`` adds 10 cool-down epochs at ``min_lr``, so the run lasts 310 epochs; weight
decay skips biases and all 1-D parameters (timm ``param_groups_weight_decay``); the EMA is
timm's ``ModelEmaV2`` updated after every optimizer step with a fixed decay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from data.augment import Augment
from models.variants import OFFICIAL, VARIANTS

_SH = "scripts/train_{v}_model.sh"
_TRAIN = "train.py"
_MODEL = "models/overlock.py"

# Where each value comes from ({v}: the variant's script). Lines of the official repository.
SOURCES: dict[str, str] = {
    "num_classes": f"{_TRAIN}:106 (--num-classes 1000)",
    "img_size": f"{_MODEL}:838 (_cfg input_size 3x224x224)",
    "crop_pct": f"{_MODEL}:862/885/908/931 (default_cfg of xt/t/s/b)",
    "eval_interpolation": f"{_MODEL}:840 (_cfg interpolation bicubic)",
    "batch_size": f"{_SH}:7 (--batch-size 256 per GPU)",
    "world_size": f"{_SH}:4 (--nproc_per_node=8)",
    "base_lr": f"{_TRAIN}:466 (--auto-lr: lr = global batch / 1024 * 1e-3; {_SH}:9-10)",
    "opt": f"{_TRAIN}:135 (--opt adamw: torch.optim.AdamW)",
    "opt_betas": f"torch AdamW default ({_TRAIN}:139 --opt-betas unset)",
    "opt_eps": f"torch AdamW default ({_TRAIN}:137 --opt-eps unset)",
    "weight_decay": f"{_TRAIN}:143 (0.05; none on biases/1-D params: timm 0.6.12 "
    "optim_factory.param_groups_weight_decay)",
    "epochs": f"{_SH}:12 (--epochs 300)",
    "cooldown_epochs": f"{_TRAIN}:187 (10, added by timm 0.6.12 create_scheduler)",
    "warmup_epochs": f"{_SH}:13 (--warmup-epochs 5)",
    "warmup_lr": f"{_TRAIN}:173 (--warmup-lr 1e-6)",
    "min_lr": f"{_TRAIN}:175 (--min-lr 1e-5)",
    "sched": f"{_TRAIN}:153 (cosine, per epoch: {_TRAIN}:751, t_in_epochs)",
    "drop_path": f"{_SH}:11 (--drop-path)",
    "ema_decay": f"{_SH}:15-16 (--model-ema --model-ema-decay 0.9999; ModelEmaV2 {_TRAIN}:510)",
    "clip_grad": f"{_SH}:19 (--clip-grad 5, mode norm {_TRAIN}:147)",
    "amp": f"{_SH}:18 (--native-amp: float16 autocast + GradScaler, {_TRAIN}:483-484)",
    "grad_checkpoint": "README.md:73 (off in the scripts; '--grad-checkpoint --ckpt-stg 4 0 0 0' "
    "only if GPU memory is short)",
    "aux_loss_ratio": f"{_TRAIN}:149 (loss = CE(main) + 0.4 CE(aux), {_TRAIN}:864)",
    "mixup": f"{_TRAIN}:227 (--mixup 0.8)",
    "cutmix": f"{_TRAIN}:229 (--cutmix 1.0)",
    "mix_prob": f"{_TRAIN}:233 (--mixup-prob 1.0)",
    "switch_prob": f"{_TRAIN}:235 (--mixup-switch-prob 0.5; mode batch {_TRAIN}:237)",
    "smoothing": f"{_TRAIN}:241 (--smoothing 0.1, folded into the mixup targets)",
    "reprob": f"{_TRAIN}:219 (--reprob 0.25)",
    "remode": f"{_TRAIN}:221 (--remode pixel)",
    "recount": f"{_TRAIN}:223 (--recount 1)",
    "auto_augment": f"{_TRAIN}:207 (--aa; it disables --color-jitter in timm 0.6.12)",
    "scale": f"{_TRAIN}:197 (--scale 0.08 1.0)",
    "ratio": f"{_TRAIN}:199 (--ratio 3/4 4/3)",
    "hflip": f"{_TRAIN}:201 (--hflip 0.5)",
    "train_interpolation": f"{_TRAIN}:243 (--train-interpolation random: bilinear or bicubic)",
    "seed": f"{_TRAIN}:277 (--seed 42)",
}

# A variant's drop path, evaluation crop_pct and input size come from ``models.variants``. xxt is
# this project's extra variant, not official: it takes the smallest official drop path (xt's)
# and the crop_pct of its own model config.
OFFICIAL_VARIANTS = OFFICIAL


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of the official ImageNet-1k run of one variant (``SOURCES`` per field)."""

    model: str
    official: bool
    drop_path: float
    crop_pct: float
    num_classes: int = 1000
    img_size: int = 224
    eval_interpolation: str = "bicubic"
    batch_size: int = 256
    world_size: int = 8
    base_lr: float = 1e-3
    opt: str = "adamw"
    opt_betas: tuple[float, float] = (0.9, 0.999)
    opt_eps: float = 1e-8
    weight_decay: float = 0.05
    sched: str = "cosine"
    epochs: int = 300
    cooldown_epochs: int = 10
    warmup_epochs: int = 5
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    ema_decay: float = 0.9999
    clip_grad: float = 5.0
    amp: bool = True
    grad_checkpoint: bool = False
    aux_loss_ratio: float = 0.4
    mixup: float = 0.8
    cutmix: float = 1.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    smoothing: float = 0.1
    reprob: float = 0.25
    remode: str = "pixel"
    recount: int = 1
    auto_augment: str = "rand-m9-mstd0.5-inc1"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    train_interpolation: str = "random"
    seed: int = 42
    overrides: tuple[str, ...] = field(default=())

    @property
    def total_epochs(self) -> int:
        """Epochs actually run: the cosine schedule plus the cool-down at ``min_lr`` (310)."""
        return self.epochs + self.cooldown_epochs

    def lr(self, global_batch: int) -> float:
        """Peak learning rate for ``global_batch`` images per step (official ``--auto-lr``)."""
        return (global_batch / 1024) * self.base_lr

    def lr_at(self, epoch: float, global_batch: int) -> float:
        """Learning rate during ``epoch`` (``lr_at`` with this recipe's schedule)."""
        return lr_at(
            epoch, self.lr(global_batch), self.epochs, self.warmup_epochs,
            self.warmup_lr, self.min_lr,
        )  # fmt: skip

    def augment(self) -> Augment:
        """The loader settings (``data.augment.Augment``) of this recipe."""
        return Augment(
            random_resized_crop=True, scale=self.scale, ratio=self.ratio,
            interpolation=self.train_interpolation, hflip=self.hflip,
            auto_augment=self.auto_augment, mixup=self.mixup, cutmix=self.cutmix,
            mix_prob=self.mix_prob, switch_prob=self.switch_prob, smoothing=self.smoothing,
            reprob=self.reprob, remode=self.remode, recount=self.recount,
        )  # fmt: skip

    def with_overrides(self, **changes: object) -> Recipe:
        """A copy with some values changed (e.g. a smaller batch), recorded as not official."""
        unknown = set(changes) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown recipe fields: {sorted(unknown)}")
        return replace(self, **changes, overrides=tuple(sorted({*self.overrides, *changes})))


def recipe_for(model: str) -> Recipe:
    """The official recipe of variant ``model`` (``"t"`` or ``"overlock_t"``; xxt: by analogy)."""
    name = model.removeprefix("overlock_")
    if name not in VARIANTS:
        raise ValueError(f"no ImageNet recipe for model {model!r}; one of {sorted(VARIANTS)}")
    variant = VARIANTS[name]
    return Recipe(
        name, variant.official, variant.drop_path, variant.crop_pct,
        img_size=variant.input_size[-1],
    )  # fmt: skip


def format_recipe(recipe: Recipe, global_batch: int | None = None) -> list[str]:
    """Lines showing every value and its source, for printing at the start of a run."""
    kind = "official" if recipe.official else "not official: xt's recipe, own crop_pct"
    lines = [f"recipe imagenet for overlock_{recipe.model} ({kind})"]
    script_variant = recipe.model if recipe.official else "xt"
    if global_batch is not None:
        lines.append(f"  lr (peak) = {recipe.lr(global_batch):.6g} for a global batch of "
                     f"{global_batch}; {recipe.total_epochs} epochs in all")  # fmt: skip
    values = asdict(recipe)
    for name in SOURCES:
        value = values[name]
        if name in recipe.overrides:
            source = "CHANGED from the official value"
        elif name == "crop_pct" and not recipe.official:
            source = "not official: the model's own config (models/variants.py)"
        else:
            source = SOURCES[name].format(v=script_variant)
        lines.append(f"  {name:<20} = {_show(value):<22} {source}")
    return lines


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value) + ")"
    return str(value)


# --- numpy references of the training-step semantics ----------------------------------------
def lr_at(
    epoch: float,
    base_lr: float,
    epochs: int,
    warmup_epochs: int,
    warmup_lr: float,
    min_lr: float,
) -> float:
    """timm's ``CosineLRScheduler`` (one cycle, no noise, k-decay 1) at time ``epoch``.

    Linear warm-up from ``warmup_lr`` over ``warmup_epochs``, then
    ``min_lr + (base_lr - min_lr) (1 + cos(pi epoch / epochs)) / 2`` (the warm-up is not a
    prefix: the cosine is evaluated at the absolute epoch), then ``min_lr`` from ``epochs`` on
    (the cool-down). The official run evaluates it at integer epochs (constant within an epoch).
    """
    if epoch < warmup_epochs:
        return warmup_lr + epoch * ((base_lr - warmup_lr) / warmup_epochs)
    if epoch >= epochs:
        return min_lr
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs))


def ema_update(
    ema: dict[str, np.ndarray], params: Mapping[str, np.ndarray], decay: float
) -> dict[str, np.ndarray]:
    """One timm ``ModelEmaV2.update``, in place on ``ema`` (returned): every state entry,
    parameters and buffers alike, becomes ``decay * e + (1 - decay) * p`` computed in the
    entry's float type (torch's tensor x Python-float arithmetic). Integer buffers (BatchNorm's
    ``num_batches_tracked``) go through the same formula in float32 and are truncated back, as
    ``copy_`` does (so they lag far behind the model's; BatchNorm with a momentum ignores them).
    """
    if ema.keys() != params.keys():
        raise KeyError(f"EMA and model entries differ: {sorted(ema.keys() ^ params.keys())}")
    for name, e in ema.items():
        p = np.asarray(params[name])
        if e.shape != p.shape:
            raise ValueError(f"{name}: EMA shape {e.shape} != model shape {p.shape}")
        work = e.dtype.type if np.issubdtype(e.dtype, np.floating) else np.float32
        mixed = work(decay) * e.astype(work) + work(1.0 - decay) * p.astype(work)
        ema[name] = mixed.astype(e.dtype)  # float -> int truncates toward zero, like copy_
    return ema


def clip_grad_norm(grads: Sequence[np.ndarray], max_norm: float) -> tuple[list[np.ndarray], float]:
    """``torch.nn.utils.clip_grad_norm_`` (2-norm) on float32 gradients: total = 2-norm of the
    per-tensor 2-norms; every gradient is scaled by ``min(1, max_norm / (total + 1e-6))``, even
    when that is 1 (float32; torch divides as ``reciprocal(total + 1e-6) * max_norm``).
    Returns (clipped copies, total norm before clipping).
    """
    norms = np.array([np.linalg.norm(g.astype(np.float32).ravel()) for g in grads], np.float32)
    total = np.float32(np.linalg.norm(norms))
    coef = np.float32(1.0) / (total + np.float32(1e-6)) * np.float32(max_norm)
    coef = min(coef, np.float32(1.0))
    return [(g.astype(np.float32) * coef).astype(np.float32) for g in grads], float(total)


def soft_target_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """timm's ``SoftTargetCrossEntropy``: mean over the batch of ``-sum(t * log_softmax(z))``
    (float64). With one-hot targets it is the plain cross entropy.
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(np.mean(-(np.asarray(targets, dtype=np.float64) * log_p).sum(axis=1)))
