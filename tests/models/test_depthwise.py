"""The Jittor CPU depthwise convolution kernels (models/depthwise_jittor.py) against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from core.jittor_env import jt
from models import overlock_jittor as J
from models.depthwise_jittor import CPUDepthwiseConv, use_cpu_depthwise

# (N, C, H, W, K, padding, dilation): "same" convs of the model (kernel larger than the map
# included), non-square maps, asymmetric shrinking outputs, dilation 2..5.
CASES = [
    (2, 3, 5, 7, 3, 1, 1),
    (2, 4, 4, 4, 9, 4, 1),
    (3, 2, 2, 2, 7, 3, 1),
    (2, 3, 8, 6, 3, 5, 5),
    (2, 3, 16, 16, 7, 6, 2),
    (1, 2, 6, 9, 5, 2, 1),
    (2, 2, 3, 3, 5, 4, 2),
    (2, 3, 9, 5, 3, 0, 1),  # no padding: the output shrinks
    (1, 2, 4, 5, 13, 6, 1),
    # channel blocks of 1, 2, 3, 4 and 8 vectors, padded to whole vectors or not
    (2, 16, 6, 5, 13, 6, 1),
    (1, 24, 5, 7, 5, 4, 2),
    (2, 27, 4, 6, 3, 1, 1),
    (1, 72, 3, 3, 7, 3, 1),
    (1, 101, 2, 3, 3, 2, 2),
]


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_forward_and_gradients_equal_torch_in_float64(case) -> None:
    n, c, h, w, k, pad, dil = case
    rng = np.random.default_rng(sum(case))
    x, weight = rng.standard_normal((n, c, h, w)), rng.standard_normal((c, 1, k, k))
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(weight, requires_grad=True)
    ty = TF.conv2d(tx, tw, padding=pad, dilation=dil, groups=c)
    grad_y = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(grad_y))

    jx, jw = jt.array(x, dtype=jt.float64), jt.array(weight, dtype=jt.float64)
    jy = CPUDepthwiseConv((pad, pad), (dil, dil))(jx, jw)
    d_x, d_w = jt.grad((jy * jt.array(grad_y, dtype=jt.float64)).sum(), [jx, jw])
    assert jy.shape == tuple(ty.shape)
    for got, want in ((jy, ty.detach()), (d_x, tx.grad), (d_w, tw.grad)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-12)


def test_attached_to_every_stride_1_depthwise_conv_and_only_those() -> None:
    model = J.overlock_xxt(num_classes=4)
    convs = [m for m in model.modules() if isinstance(m, jt.nn.Conv2d)]
    fast = [m for m in convs if isinstance(getattr(m, "depthwise_conv", None), CPUDepthwiseConv)]
    expected = [m for m in convs if m.is_depthwise_conv and tuple(m.stride) == (1, 1)]
    assert fast == expected and len(fast) > 20
    model.reparam()  # merged kernels are new convs: they get it too
    convs = [m for m in model.modules() if isinstance(m, jt.nn.Conv2d)]
    expected = [m for m in convs if m.is_depthwise_conv and tuple(m.stride) == (1, 1)]
    assert expected
    assert all(isinstance(getattr(m, "depthwise_conv", None), CPUDepthwiseConv) for m in expected)
    assert use_cpu_depthwise(model) == len(expected)


def test_state_dict_is_unchanged_by_the_kernels() -> None:
    model = J.overlock_xxt(num_classes=4)
    keys = set(model.state_dict())
    assert not any("depthwise_conv" in k for k in keys)
