"""contmix_av's CPU kernels against the composition they replace (permute, slice, two na2d_av,
concatenate, permute back): with na2d_av's CPU kernels the same numbers bit for bit, forward and
all gradients; in the CUDA forms (na2d_av by reindex) the same to float rounding."""

from __future__ import annotations

import numpy as np
import pytest

from core.jittor_env import CUDA_FORMS_VARIABLE, jt
from models.contmix_jittor import contmix_av
from models.na2d_jittor import na2d_av


def _composition(a1: jt.Var, a2: jt.Var, x: jt.Var, k1: int, k2: int) -> jt.Var:
    B, _, H, W = x.shape
    value = x.reshape(B, 2, a1.shape[1], -1, H, W).permute(1, 0, 2, 4, 5, 3)  # m b g h w c
    out = jt.concat([na2d_av(a1, value[0], k1), na2d_av(a2, value[1], k2)], dim=1)
    return out.permute(0, 1, 4, 2, 3).reshape(B, -1, H, W)


def _run(op, x: np.ndarray, a1: np.ndarray, a2: np.ndarray, grad: np.ndarray, k1: int, k2: int):
    xv, av1, av2 = jt.array(x), jt.array(a1), jt.array(a2)
    out = op(av1, av2, xv, k1, k2)
    grads = jt.grad((out * jt.array(grad)).sum(), [av1, av2, xv])
    return [v.numpy() for v in (out, *grads)]


@pytest.mark.parametrize(
    ("batch", "groups", "dim", "size", "k1", "k2", "dtype"),
    [
        (2, 1, 24, 9, 5, 7, np.float32),  # XXT stage 3: one head, a value dim of 3 lane groups
        (3, 2, 16, 7, 5, 7, np.float32),  # two heads, a full window at 7x7
        (1, 2, 13, 11, 3, 9, np.float64),  # a dim that is no multiple of 8 (the tail), float64
    ],
)
def test_kernels_equal_the_composition(
    batch, groups, dim, size, k1, k2, dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((batch, 2 * groups * dim, size, size)).astype(dtype)
    a1 = rng.random((batch, groups, size, size, k1 * k1)).astype(dtype)
    a2 = rng.random((batch, groups, size, size, k2 * k2)).astype(dtype)
    grad = rng.standard_normal(x.shape).astype(dtype)
    names = ("out", "d_attn_small", "d_attn_large", "d_x")
    got = _run(contmix_av, x, a1, a2, grad, k1, k2)
    want = _run(_composition, x, a1, a2, grad, k1, k2)
    for name, g, w in zip(names, got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        np.testing.assert_array_equal(g, w, err_msg=name)
    monkeypatch.setenv(CUDA_FORMS_VARIABLE, "1")
    cuda_form = _run(contmix_av, x, a1, a2, grad, k1, k2)
    for name, g, w in zip(names, got, cuda_form, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max(), err_msg=name)


def test_a_window_larger_than_the_map_is_one_line_of_error() -> None:
    x = jt.zeros((1, 2 * 4, 4, 4))
    with pytest.raises(ValueError, match="kernel"):
        contmix_av(jt.zeros((1, 1, 4, 4, 25)), jt.zeros((1, 1, 4, 4, 49)), x, 5, 7)
