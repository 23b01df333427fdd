"""OverLoCK as a detection / segmentation backbone in Jittor: the factory's ``features_only``
model feeds a small feature-pyramid neck (FPN, Lin et al., CVPR 2017). The twin of
``examples/backbone_fpn_torch.py``.

    python -m examples.backbone_fpn_jittor [--model overlock_xt] [--size 224] [--checkpoint PATH]

prints the four stage maps (strides 4, 8, 16, 32) and the pyramid built on them. With
``--checkpoint`` (an ImageNet classification checkpoint of either framework, e.g. the official
one) the backbone starts from those weights; the heads it does not use are left out.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from core.jittor_env import jt  # configures Jittor before its first import
from models import overlock_jittor
from models.weights import load_state_dict

nn = jt.nn


class FeaturePyramid(nn.Module):
    """FPN neck: a 1x1 lateral conv per map, a top-down pass (nearest-neighbour upsampling
    and addition), then a 3x3 conv per level; every level gets ``channels`` channels."""

    def __init__(self, in_channels: Sequence[int], channels: int = 64):
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(c, channels, kernel_size=1) for c in in_channels])
        self.smooth = nn.ModuleList(
            [nn.Conv2d(channels, channels, kernel_size=3, padding=1) for _ in in_channels]
        )

    def execute(self, maps: Sequence[jt.Var]) -> list[jt.Var]:
        levels = [conv(m) for conv, m in zip(self.lateral, maps, strict=True)]
        for i in range(len(levels) - 1, 0, -1):  # coarse to fine
            size = tuple(levels[i - 1].shape[-2:])
            levels[i - 1] = levels[i - 1] + nn.interpolate(levels[i], size=size, mode="nearest")
        return [conv(level) for conv, level in zip(self.smooth, levels, strict=True)]


def build(model_name: str = "overlock_xt", channels: int = 64) -> tuple[nn.Module, nn.Module]:
    """(backbone, neck): the model's four stage maps (``features_only``), and an FPN on them."""
    backbone = getattr(overlock_jittor, model_name)(features_only=True, out_indices=(0, 1, 2, 3))
    in_channels = [backbone.feature_info[i]["num_chs"] for i in backbone.out_indices]
    return backbone, FeaturePyramid(in_channels, channels)


def load_backbone_weights(backbone: nn.Module, path: str) -> None:
    """The backbone's part of a classification checkpoint (every tensor it needs must be there)."""
    wanted = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    state = load_state_dict(path)
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise SystemExit(f"{path}: no {', '.join(missing[:5])} ({len(missing)} tensors missing)")
    # Jittor has no 0-d arrays: torch's scalar num_batches_tracked is shape (1,) here.
    backbone.load_state_dict(
        {k: np.asarray(state[k]).reshape(shape) for k, shape in wanted.items()}
    )


def main(argv: Sequence[str] | None = None) -> list[jt.Var]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="overlock_xt")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--checkpoint", help="classification weights for the backbone")
    args = parser.parse_args(argv)

    backbone, neck = build(args.model)
    if args.checkpoint:
        load_backbone_weights(backbone, args.checkpoint)
    backbone.eval()
    neck.eval()
    images = jt.randn(args.batch, 3, args.size, args.size)
    with jt.no_grad():
        maps = backbone(images)
        pyramid = neck(maps)
    strides = [backbone.feature_info[i]["reduction"] for i in backbone.out_indices]
    for stride, fmap, level in zip(strides, maps, pyramid, strict=True):
        print(f"stride {stride:2d}: backbone {tuple(fmap.shape)} -> pyramid {tuple(level.shape)}")
    return pyramid


if __name__ == "__main__":
    main()
