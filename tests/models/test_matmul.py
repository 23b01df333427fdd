"""models/matmul_jittor.py: the CPU kernels of ContMix's batched ``query^T @ key``."""

from __future__ import annotations

import numpy as np
import pytest

from core.jittor_env import jt
from models.matmul_jittor import matmul_tn


@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (3, 2, 5, 7, 4), (2, 4, 32, 49, 49)])
def test_matches_float64_in_value_and_gradients(shape: tuple[int, ...]) -> None:
    batch, heads, c, n, length = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((batch, heads, c, n))
    b = rng.standard_normal((batch, heads, c, length))
    g = rng.standard_normal((batch, heads, n, length))
    ja, jb = jt.array(a.astype(np.float32)), jt.array(b.astype(np.float32))
    out = matmul_tn(ja, jb)
    grad_a, grad_b = jt.grad((out * jt.array(g.astype(np.float32))).sum(), [ja, jb])
    expected = {
        "out": np.einsum("bhcn,bhcl->bhnl", a, b),
        "grad_a": np.einsum("bhnl,bhcl->bhcn", g, b),
        "grad_b": np.einsum("bhcn,bhnl->bhcl", a, g),
    }
    for name, got in (("out", out), ("grad_a", grad_a), ("grad_b", grad_b)):
        ref = expected[name]
        assert got.shape == ref.shape, name
        assert np.abs(got.numpy() - ref).max() <= 1e-6 * max(np.abs(ref).max(), 1.0) * c, name


def test_equals_jittors_own_matmul_and_checks_shapes() -> None:
    rng = np.random.default_rng(1)
    a = jt.array(rng.standard_normal((2, 3, 8, 9)).astype(np.float32))
    b = jt.array(rng.standard_normal((2, 3, 8, 5)).astype(np.float32))
    np.testing.assert_allclose(
        matmul_tn(a, b).numpy(), (a.transpose(-1, -2) @ b).numpy(), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="differ before the last axis"):
        matmul_tn(a, b[:, :, :4])
