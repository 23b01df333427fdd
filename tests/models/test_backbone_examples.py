"""The backbone examples (examples/backbone_fpn_*.py): OverLoCK-XT's four stage maps feed an FPN
neck in each framework, shapes printed; a classification checkpoint gives the backbone its
weights (the same maps as the full model's forward_intermediates)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.jittor_env import jt
from examples import backbone_fpn_jittor, backbone_fpn_torch
from models import overlock_torch as T

SIZE = 64
STRIDES = (4, 8, 16, 32)


def _printed_shapes(out: str) -> list[tuple[int, str, str]]:
    rows = []
    for line in out.strip().splitlines():
        stride, shapes = line.removeprefix("stride").split(":")
        backbone, pyramid = shapes.split("->")
        rows.append(
            (
                int(stride),
                backbone.split("backbone")[1].strip(),
                pyramid.split("pyramid")[1].strip(),
            )
        )
    return rows


@pytest.mark.parametrize(
    "example", [backbone_fpn_torch, backbone_fpn_jittor], ids=["torch", "jittor"]
)
def test_example_prints_the_four_levels(example, capsys) -> None:
    pyramid = example.main(["--size", str(SIZE), "--batch", "2"])
    channels = [56, 112, 256, 336 + 84]  # OverLoCK-XT's stage widths
    rows = _printed_shapes(capsys.readouterr().out)
    assert [r[0] for r in rows] == list(STRIDES)
    for (stride, backbone, level), c, fmap in zip(rows, channels, pyramid, strict=True):
        side = SIZE // stride
        assert backbone == str((2, c, side, side))
        assert level == str((2, 64, side, side)) == str(tuple(fmap.shape))


@pytest.fixture(scope="module")
def classifier_checkpoint(tmp_path_factory):
    """An OverLoCK-XT classification checkpoint (heads included), and its model."""
    torch.manual_seed(0)
    model = T.overlock_xt(num_classes=10).eval()
    path = tmp_path_factory.mktemp("ckpt") / "overlock_xt.pth"
    torch.save(model.state_dict(), path)
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        want = model.forward_intermediates(torch.from_numpy(x), intermediates_only=True)
    return path, x, [m.numpy() for m in want]


def test_torch_backbone_loads_classification_weights(classifier_checkpoint) -> None:
    path, x, want = classifier_checkpoint
    backbone, _ = backbone_fpn_torch.build()
    backbone_fpn_torch.load_backbone_weights(backbone, str(path))
    backbone.eval()
    with torch.no_grad():
        maps = backbone(torch.from_numpy(x))
    for fmap, expected in zip(maps, want, strict=True):
        np.testing.assert_array_equal(fmap.numpy(), expected)


def test_jittor_backbone_loads_classification_weights(classifier_checkpoint) -> None:
    path, x, want = classifier_checkpoint
    backbone, _ = backbone_fpn_jittor.build()
    backbone_fpn_jittor.load_backbone_weights(backbone, str(path))
    backbone.eval()
    maps = backbone(jt.array(x))
    for fmap, expected in zip(maps, want, strict=True):
        assert float(np.abs(fmap.numpy() - expected).max()) <= 1e-4
