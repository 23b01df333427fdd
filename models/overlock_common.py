"""The framework-free parts of OverLoCK, shared by both twins.

``models/overlock_torch.py`` and ``models/overlock_jittor.py`` build the same network; what does
not depend on the framework is decided here, once, so the twins cannot drift apart: the
relative-position-bias index, the dilated-branch table, the window of maps smaller than the
ContMix kernel, each block's constructor arguments (stochastic-depth rates included), the model
config (timm's ``default_cfg`` and per-stage ``feature_info``, the stage selection of
``forward_intermediates``) and the ``overlock_<name>`` / ``overlock_<name>_reparam`` factories
generated from ``models/variants.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .variants import DEPLOY_SUFFIX, VARIANTS, Variant

# ImageNet normalisation, as timm's IMAGENET_DEFAULT_MEAN / _STD (tests/models check they agree).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# timm.create_model passes these; they only matter for hub weights, which are not supported.
TIMM_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


class _DictReads:
    """The official output dict's reads on a (main, aux) named tuple."""

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            if key not in self._fields:  # type: ignore[attr-defined]
                raise KeyError(key)
            return getattr(self, key)
        return tuple.__getitem__(self, key)  # type: ignore[arg-type]

    def keys(self) -> tuple[str, ...]:
        return self._fields  # type: ignore[attr-defined]

    def values(self) -> tuple[Any, ...]:
        return tuple(self)  # type: ignore[arg-type]

    def items(self) -> tuple[tuple[str, Any], ...]:
        return tuple(zip(self._fields, self, strict=True))  # type: ignore[attr-defined,call-overload]


def train_output_type(tensor: type, module: str) -> type:
    """The type of a twin's training-mode output, ``TrainOutput(main, aux)``: the main and the
    auxiliary head's logits, fields typed ``tensor`` (TorchScript needs the type).

    A tuple, as timm's model tests, torch.compile and FX expect of an output, that also reads as
    the official model's dict: ``out["main"]``, ``out["aux"]``, ``keys()``, ``items()``,
    ``dict(out)``. Iterating it yields the two tensors (a tuple's items), not a dict's keys.
    """
    fields = NamedTuple("TrainOutput", [("main", tensor), ("aux", tensor)])  # noqa: UP014 (typed at run time)
    namespace = {"__slots__": (), "__module__": module, "__annotations__": fields.__annotations__}
    output = type("TrainOutput", (_DictReads, fields), namespace)
    output.__doc__ = train_output_type.__doc__
    return output


@functools.lru_cache(maxsize=64)
def rpb_index(height: int, width: int, kernel_size: int) -> np.ndarray:
    """Index into a flattened (2K-1, 2K-1) relative-position-bias table, shape (H*W, K*K).

    Neighbourhood attention (NATTEN, dilation 1) gives query i the window starting at
    s_i = clamp(i - K//2, 0, L - K); its neighbour k sits at s_i + k, so the relative offset is
    s_i + k - i and its bias-table row is s_i + k - i + K - 1. Equals the official ``apply_rpb``
    (checked against it in tests/models/test_models.py).
    """

    def axis(length: int) -> np.ndarray:  # (L, K) table rows along one axis
        pos = np.arange(length)
        start = np.clip(pos - kernel_size // 2, 0, length - kernel_size)
        return start[:, None] + np.arange(kernel_size)[None, :] - pos[:, None] + kernel_size - 1

    size = 2 * kernel_size - 1
    rows, cols = axis(height), axis(width)
    idx = rows[:, None, :, None] * size + cols[None, :, None, :]  # (H, W, K, K)
    return idx.reshape(height * width, kernel_size * kernel_size)


# Small dilated branches added to a depthwise K x K kernel (UniRepLKNet defaults):
# kernel_size -> (branch kernel sizes, branch dilations).
DILATED_BRANCHES = {
    19: ([5, 7, 9, 9, 3, 3, 3], [1, 1, 1, 2, 4, 5, 7]),
    17: ([5, 7, 9, 3, 3, 3], [1, 1, 2, 4, 5, 7]),
    15: ([5, 7, 7, 3, 3, 3], [1, 1, 2, 3, 5, 7]),
    13: ([5, 7, 7, 3, 3, 3], [1, 1, 2, 3, 4, 5]),
    11: ([5, 7, 5, 3, 3, 3], [1, 1, 2, 3, 4, 5]),
    9: ([5, 7, 5, 3, 3], [1, 1, 2, 3, 4]),
    7: ([5, 3, 3, 3], [1, 1, 2, 3]),
    5: ([3, 3], [1, 2]),
}


def dilated_branches(kernel_size: int) -> tuple[list[int], list[int]]:
    """(branch kernel sizes, branch dilations) of a DilatedReparamBlock with this kernel."""
    if kernel_size not in DILATED_BRANCHES:
        raise ValueError(f"DilatedReparamBlock has no branch setting for kernel {kernel_size}")
    return DILATED_BRANCHES[kernel_size]


def upsampled_size(height: int, width: int, kernel_size: int) -> tuple[int, int]:
    """The size a map smaller than the ContMix window is resized to: its short side becomes the
    window, the long side keeps the aspect ratio (as the official code)."""
    if height < width:
        return (kernel_size, int(kernel_size / height * width))
    return (int(kernel_size / width * height), kernel_size)


def block_args(
    *,
    depth: Sequence[int],
    sub_depth: Sequence[int],
    embed_dim: Sequence[int],
    kernel_size: Sequence[int],
    mlp_ratio: Sequence[float],
    sub_mlp_ratio: Sequence[float],
    sub_num_heads: Sequence[int],
    ls_init_value: Sequence[float | None],
    smk_size: int,
    drop_path_rate: float,
    use_checkpoint: Sequence[int],
) -> tuple[list[list[dict[str, Any]]], list[list[dict[str, Any]]]]:
    """The per-block constructor arguments of OverLoCK's stages, from its own arguments.

    Returns (4 lists of RepConvBlock arguments, 2 lists of DynamicConvBlock arguments), one per
    stage; the stochastic-depth rate rises linearly over all blocks, sub-stages last.
    """
    dpr = np.linspace(0, drop_path_rate, sum(depth) + sum(sub_depth)).tolist()
    first = np.cumsum([0, *depth, *sub_depth]).tolist()  # first dpr index of each stage
    rep = [
        [
            {
                "dim": embed_dim[s],
                "kernel_size": kernel_size[s],
                "mlp_ratio": mlp_ratio[s],
                "ls_init_value": ls_init_value[s],
                "drop_path": dpr[first[s] + i],
                "use_checkpoint": i < use_checkpoint[s],
            }
            for i in range(depth[s])
        ]
        for s in range(4)
    ]
    dyn = []
    for j in range(2):
        s = j + 2  # sub-stage j re-reads stage s
        dyn.append(
            [
                {
                    "dim": embed_dim[s],
                    "ctx_dim": embed_dim[-1],
                    "kernel_size": kernel_size[s],
                    "num_heads": sub_num_heads[j],
                    "pool_size": 7,
                    "mlp_ratio": sub_mlp_ratio[j],
                    "ls_init_value": ls_init_value[s],
                    "drop_path": dpr[first[4 + j] + i],
                    "smk_size": smk_size,
                    "is_first": j == 0 and i == 0,
                    "is_last": j == 1 and i == sub_depth[1] - 1,
                    "use_checkpoint": i < use_checkpoint[s],
                }
                for i in range(sub_depth[j])
            ]
        )
    return rep, dyn


def stage_feature_info(
    depth: Sequence[int], sub_depth: Sequence[int], embed_dim: Sequence[int]
) -> list[dict[str, Any]]:
    """timm's ``feature_info`` of the four stage outputs: channels, stride, the block ending it.

    Stages 1-2 are the Base-Net's; 3-4 the Focus-Net's, whose stage-3 output is the feature part
    of its last block (the context channels split off) and stage 4 its whole output (features
    and context, the head's input). The maps ERF and Grad-CAM explain (backends.base.STAGE_MODULES).
    """
    return [
        {"num_chs": embed_dim[0], "reduction": 4, "module": f"blocks1.{depth[0] - 1}"},
        {"num_chs": embed_dim[1], "reduction": 8, "module": f"blocks2.{depth[1] - 1}"},
        {"num_chs": embed_dim[2], "reduction": 16, "module": f"sub_blocks3.{sub_depth[0] - 1}"},
        {
            "num_chs": embed_dim[3] + embed_dim[3] // 4,
            "reduction": 32,
            "module": f"sub_blocks4.{sub_depth[1] - 1}",
        },
    ]


def take_indices(num_stages: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """The stages ``indices`` selects and the last of them, as timm's ``feature_take_indices``.

    ``None``: every stage; an int ``n``: the last ``n``; a sequence: those stages, negative ones
    counted from the end.

    Raises:
        ValueError: an index outside the stages.
    """
    if indices is None:
        indices = num_stages
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"last-n indices: {indices} is not in 1..{num_stages}")
        taken = list(range(num_stages - indices, num_stages))
    else:
        taken = [num_stages + i if i < 0 else i for i in indices]
        if not taken or not all(0 <= i < num_stages for i in taken):
            raise ValueError(f"stage indices {list(indices)} are not in 0..{num_stages - 1}")
    return taken, max(taken)


def check_global_pool(global_pool: str) -> str:
    """``global_pool`` if the heads support it: "avg" (pooled logits) or "" (no pooling: maps)."""
    if global_pool not in ("avg", ""):
        raise ValueError(f"global_pool must be 'avg' or '' (no pooling), got {global_pool!r}")
    return global_pool


def default_cfg(variant: Variant) -> dict[str, Any]:
    """The timm-style model config of a variant (``model.default_cfg``), from the table."""
    _, height, width = variant.input_size
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": variant.input_size,
        "pool_size": (height // 32, width // 32),  # the final map's size at input_size
        "crop_pct": variant.crop_pct,
        "interpolation": "bicubic",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "first_conv": "patch_embed1.0",
        "classifier": ("head.4", "aux_head.2"),  # the main and the auxiliary classifier
        "paper_ids": "arXiv:2502.20087",
        "origin_url": "https://github.com/LMMMEng/OverLoCK",
    }


# model name -> config; timm's register_model reads a module's ``default_cfgs``.
DEFAULT_CFGS = {
    variant.model_name + suffix: default_cfg(variant)
    for variant in VARIANTS.values()
    for suffix in ("", DEPLOY_SUFFIX)
}

# (model class, model name, variant, **constructor overrides) -> model
ModelBuilder = Callable[..., Any]


def build_model(
    model_class: Callable[..., Any], model_name: str, variant: Variant, **kwargs: Any
) -> Any:
    """``model_class`` with the variant's architecture (``kwargs`` override or add) and its
    config as ``default_cfg``; timm's hub arguments are dropped. The Jittor twin's builder (the
    PyTorch twin uses timm's ``build_model_with_cfg``)."""
    for key in TIMM_KWARGS:
        kwargs.pop(key, None)
    model = model_class(**{**variant.model_args(), **kwargs})
    model.pretrained_cfg = model.default_cfg = default_cfg(variant)
    return model


def _refuse_pretrained(variant: Variant, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(
            f"{variant.model_name}: pretrained=True is not supported (no hub downloads); build "
            "the model and load a local checkpoint with load_state_dict"
        )


def _factory(
    model_class: Callable[..., Any], variant: Variant, deploy: bool, build: ModelBuilder
) -> Callable:
    extra = {"deploy": True} if deploy else {}
    name = variant.model_name + (DEPLOY_SUFFIX if deploy else "")

    def factory(pretrained: bool = False, num_classes: int = 1000, **kwargs: Any) -> Any:
        _refuse_pretrained(variant, pretrained)
        return build(model_class, name, variant, num_classes=num_classes, **extra, **kwargs)

    title = f"OverLoCK-{variant.name.upper()}"
    if variant.official:
        factory.__doc__ = f"{title}, as in the paper."
    else:
        factory.__doc__ = f"{title}: a variant of this project (not in the paper)."
    if deploy:
        # They load checkpoints saved after ``model.reparam()`` (or the official *_reparam.pth).
        factory.__doc__ += " Deploy form: every DilatedReparamBlock is one large kernel with bias."
    factory.__doc__ += " ``features_only=True`` (with ``out_indices``): the stage maps."
    factory.__name__ = factory.__qualname__ = name
    factory.__annotations__["return"] = model_class
    return factory


def model_factories(
    model_class: Callable[..., Any],
    module: str,
    register: Callable[[Callable], Callable] = lambda fn: fn,
    variants: Iterable[Variant] | None = None,
    build: ModelBuilder = build_model,
) -> dict[str, Callable]:
    """``overlock_<name>(pretrained=False, num_classes=1000, **kwargs)`` and its ``_reparam``
    form for every variant (default: the whole table), named as attributes of ``module``.

    ``register`` is applied to each (timm's ``register_model`` in the PyTorch twin; it reads the
    function's ``__name__`` and ``__module__``); ``build`` makes the model (see ``build_model``).
    """
    factories = {}
    for variant in VARIANTS.values() if variants is None else variants:
        for deploy in (False, True):
            factory = _factory(model_class, variant, deploy, build)
            factory.__module__ = module
            factories[factory.__name__] = register(factory)
    return factories
