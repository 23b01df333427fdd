"""The effective receptive field (analysis.erf_maps): the area-ratio metric on hand-made maps, and
the input gradient of a stack of positive 3x3 convs is non-zero exactly inside the
(2k+1)-square (both frameworks, through the backends' own gradient code).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from analysis import erf_maps
from backends import jittor_backend, torch_backend


def test_area_ratio_of_a_delta_is_one_pixel() -> None:
    delta = np.zeros((64, 64))
    delta[32, 32] = 5.0
    for t in erf_maps.THRESHOLDS:
        assert erf_maps.centred_square(delta, t) == (1, 1 / 64**2)


def test_area_ratio_of_a_uniform_map_is_t() -> None:
    uniform = np.ones((65, 65))
    for t in (0.2, 0.3, 0.5, 0.99):
        side, area = erf_maps.centred_square(uniform, t)
        # The smallest odd square holding t of the total: side^2 >= t * 65^2 > (side - 2)^2.
        assert side**2 >= t * 65**2 > (side - 2) ** 2
        assert area == side**2 / 65**2 and t <= area < t + 0.05
    assert erf_maps.centred_square(np.ones((10, 10)), 1.0) == (11, 1.0)  # clipped at the border
    side, area = erf_maps.centred_square(np.zeros((8, 8)), 0.5)
    assert side == 0 and np.isnan(area)


def test_area_ratio_of_a_known_square() -> None:
    scores = np.zeros((32, 32))
    scores[16 - 3 : 16 + 4, 16 - 3 : 16 + 4] = 1.0  # a 7x7 block of 49 units
    scores[16, 16] = 49.0  # the centre holds 49 of the total 97, just over half
    assert erf_maps.centred_square(scores, 0.5) == (1, 1 / 1024)
    assert erf_maps.centred_square(scores, 0.99) == (7, 49 / 1024)


def test_accumulate_sums_abs_over_images_and_channels() -> None:
    grads = np.zeros((2, 3, 4, 4), dtype=np.float32)
    grads[0, 0, 1, 1], grads[1, 2, 1, 1], grads[1, 1, 0, 3] = -2.0, 3.0, -0.5
    summed = erf_maps.accumulate(grads)
    assert summed.shape == (4, 4) and summed[1, 1] == 5.0 and summed[0, 3] == 0.5
    assert summed.sum() == 5.5


def test_display_scale_is_decades_below_peak() -> None:
    m = np.array([[1e-9, 1e-2], [1e-1, 1.0]]) * 7
    np.testing.assert_allclose(erf_maps.display_scale(m), [[-3, -2], [-1, 0]], atol=1e-12)


# ---------------------------------------------------------------------------------------------
# known receptive field, through the backends' gradient code
# ---------------------------------------------------------------------------------------------

CONV_STACK = 3
SIZE = 17


def _positive_kernels(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(4, 3, 3, 3)] + [(4, 4, 3, 3)] * (CONV_STACK - 1)
    return [rng.uniform(0.1, 1.0, s).astype(np.float32) for s in shapes]


def _torch_conv_stack(kernels):
    weights = [torch.from_numpy(k) for k in kernels]

    def forward(x):
        maps = []
        for w in weights:
            x = TF.conv2d(x, w, padding=1)
            maps.append(x)
        return maps

    return lambda images: torch_backend.stage_input_grads(forward, images, torch.device("cpu"))


def _jittor_conv_stack(kernels):
    from core.jittor_env import jt

    weights = [jt.array(k) for k in kernels]

    def forward(x):
        maps = []
        for w in weights:
            x = jt.nn.conv2d(x, w, padding=1)
            maps.append(x)
        return maps

    return lambda images: jittor_backend.stage_input_grads(forward, images)


@pytest.mark.parametrize("framework", ["torch", "jittor"])
def test_erf_of_a_conv_stack_is_its_receptive_field(framework: str) -> None:
    make = _torch_conv_stack if framework == "torch" else _jittor_conv_stack
    input_grads = make(_positive_kernels())
    images = np.random.default_rng(1).normal(size=(3, 3, SIZE, SIZE)).astype(np.float32)
    result = erf_maps.compute_erf(input_grads, [images[:2], images[2:]])
    assert result.num_images == 3 and result.maps.shape == (CONV_STACK, SIZE, SIZE)
    c = SIZE // 2
    for k, contribution in enumerate(result.maps, start=1):
        expected = np.zeros((SIZE, SIZE), dtype=bool)
        expected[c - k : c + k + 1, c - k : c + k + 1] = True
        np.testing.assert_array_equal(contribution > 0, expected, err_msg=f"{k} convs")
    rows = {(r["stage"], r["scale"]): r for r in result.area_rows()}
    for k in range(1, CONV_STACK + 1):
        assert rows[(k, "raw")]["side_t99"] <= 2 * k + 1  # all mass inside the square
        assert rows[(k, "raw")]["area_t99"] <= (2 * k + 1) ** 2 / SIZE**2
