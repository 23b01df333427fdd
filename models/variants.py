"""Every OverLoCK variant, defined once and framework-free.

Both twins' constructors, the checkpoint converter, the scripts' ``--model`` choices, the
ImageNet recipe and the benchmark read this table; adding a variant is one entry here.
Architecture arguments come from the official ``models/overlock.py`` (xt/t/s/b); xxt is this
project's small variant for quick experiments (not in the paper). ``drop_path`` is the official
recipe's rate (xxt takes xt's) and ``crop_pct`` the model config's evaluation crop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Variant:
    """One OverLoCK size: its architecture arguments and the values its recipe uses."""

    name: str  # the short name of --model ("xt"); the model is "overlock_" + name
    depth: tuple[int, int, int, int]
    sub_depth: tuple[int, int]
    embed_dim: tuple[int, int, int, int]
    kernel_size: tuple[int, int, int, int]
    mlp_ratio: tuple[int, int, int, int]
    sub_num_heads: tuple[int, int]
    sub_mlp_ratio: tuple[int, int]
    crop_pct: float
    drop_path: float
    official: bool
    projection: int = 1024  # the official constructor's default
    input_size: tuple[int, int, int] = (3, 224, 224)
    extra: dict[str, Any] = field(default_factory=dict)  # any other constructor argument

    @property
    def model_name(self) -> str:
        return f"overlock_{self.name}"

    def model_args(self) -> dict[str, Any]:
        """The keyword arguments of ``OverLoCK(...)`` (both twins take the same)."""
        return {
            "depth": list(self.depth),
            "sub_depth": list(self.sub_depth),
            "embed_dim": list(self.embed_dim),
            "kernel_size": list(self.kernel_size),
            "mlp_ratio": list(self.mlp_ratio),
            "sub_num_heads": list(self.sub_num_heads),
            "sub_mlp_ratio": list(self.sub_mlp_ratio),
            "projection": self.projection,
            **self.extra,
        }


_OFFICIAL_BLOCKS = {"kernel_size": (17, 15, 13, 7), "mlp_ratio": (4, 4, 4, 4)}

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "xxt", depth=(1, 1, 2, 1), sub_depth=(3, 1), embed_dim=(24, 48, 96, 128),
            kernel_size=(13, 11, 9, 7), mlp_ratio=(2, 2, 2, 2), sub_num_heads=(1, 2),
            sub_mlp_ratio=(2, 2), projection=256, crop_pct=0.9, drop_path=0.1, official=False,
        ),
        Variant(
            "xt", depth=(2, 2, 3, 2), sub_depth=(6, 2), embed_dim=(56, 112, 256, 336),
            sub_num_heads=(4, 6), sub_mlp_ratio=(3, 3), crop_pct=0.925, drop_path=0.1,
            official=True, **_OFFICIAL_BLOCKS,
        ),
        Variant(
            "t", depth=(4, 4, 6, 2), sub_depth=(12, 2), embed_dim=(64, 128, 256, 512),
            sub_num_heads=(4, 8), sub_mlp_ratio=(3, 3), crop_pct=0.95, drop_path=0.15,
            official=True, **_OFFICIAL_BLOCKS,
        ),
        Variant(
            "s", depth=(6, 6, 8, 3), sub_depth=(16, 3), embed_dim=(64, 128, 320, 512),
            sub_num_heads=(8, 16), sub_mlp_ratio=(3, 3), crop_pct=0.95, drop_path=0.4,
            official=True, **_OFFICIAL_BLOCKS,
        ),
        Variant(
            "b", depth=(8, 8, 10, 4), sub_depth=(20, 4), embed_dim=(80, 160, 384, 576),
            sub_num_heads=(6, 9), sub_mlp_ratio=(3, 3), crop_pct=0.975, drop_path=0.5,
            official=True, **_OFFICIAL_BLOCKS,
        ),
    )
}  # fmt: skip

NAMES = tuple(VARIANTS)  # --model choices: "xxt", "xt", ...
OFFICIAL = tuple(name for name, v in VARIANTS.items() if v.official)
MODEL_NAMES = tuple(v.model_name for v in VARIANTS.values())  # "overlock_xxt", ...
DEPLOY_SUFFIX = "_reparam"  # the reparameterised (deploy) form of each variant
ALL_MODEL_NAMES = MODEL_NAMES + tuple(name + DEPLOY_SUFFIX for name in MODEL_NAMES)


def variant_of(model_name: str) -> tuple[Variant, bool]:
    """(variant, deploy) of a model name such as "overlock_t" or "overlock_t_reparam"."""
    deploy = model_name.endswith(DEPLOY_SUFFIX)
    base = model_name.removesuffix(DEPLOY_SUFFIX).removeprefix("overlock_")
    if base not in VARIANTS or not model_name.startswith("overlock_"):
        raise KeyError(f"unknown model {model_name!r}; choose one of {', '.join(ALL_MODEL_NAMES)}")
    return VARIANTS[base], deploy
