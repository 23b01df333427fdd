"""na2d_av (PyTorch native and Jittor) against a brute-force loop oracle, plus arguments and
backend selection. NATTEN itself is compared in tests/natten_parity/test_natten_parity.py."""

from __future__ import annotations

import functools
import os
import sys
import types

import numpy as np
import pytest
import torch

from core.jittor_env import jt
from models import na2d_jittor, na2d_torch
from models.na2d_common import neighbour_table, window_start

# make gpu-check sets cuda: the PyTorch side of these checks then runs on the GPU.
TORCH_DEVICE = os.environ.get("OVERLOCK_TEST_DEVICE", "cpu")

# --------------------------------------------------------------------------------------------
# Oracle: written from the rule, not from the implementation (lists and loops, float64).


def oracle_neighbours(index: int, length: int, kernel_size: int, dilation: int) -> list[int]:
    """Positions along one axis that query ``index`` attends to, in weight order."""
    group = [p for p in range(length) if p % dilation == index % dilation]
    first = group.index(index) - kernel_size // 2  # centred on the query ...
    if first < 0:  # ... shifted right at the start of the axis ...
        first = 0
    if first + kernel_size > len(group):  # ... and left at its end
        first = len(group) - kernel_size
    return group[first : first + kernel_size]


def oracle_av(attn, value, grad_out, kernel_size, dilation):
    """Forward and gradients of na2d_av by explicit loops; arrays are float64 numpy."""
    (k0, k1), (d0, d1) = kernel_size, dilation
    _, _, height, width, _ = value.shape
    out = np.zeros_like(value)
    d_attn = np.zeros_like(attn)
    d_value = np.zeros_like(value)
    for i in range(height):
        rows = oracle_neighbours(i, height, k0, d0)
        for j in range(width):
            cols = oracle_neighbours(j, width, k1, d1)
            for ki, r in enumerate(rows):
                for kj, c in enumerate(cols):
                    k = ki * k1 + kj
                    weight = attn[:, :, i, j, k, None]
                    out[:, :, i, j] += weight * value[:, :, r, c]
                    d_attn[:, :, i, j, k] = (grad_out[:, :, i, j] * value[:, :, r, c]).sum(-1)
                    d_value[:, :, r, c] += weight * grad_out[:, :, i, j]
    return out, d_attn, d_value


def _pair(x):
    return tuple(x) if isinstance(x, tuple) else (x, x)


def _make_cases():
    """A few map sizes in [K*d, 2*K*d + 3] per (K, d): the minimum, a non-square one, a random
    square one, and the largest square for small K (the oracle's loops cost H*W*K*K)."""
    rng = np.random.default_rng(0)
    cases = []
    for k in (3, 5, 7, 9, 11, 13):
        for d in (1, 2):
            lo, hi = k * d, 2 * k * d + 3
            sizes = {(lo, lo), (lo, hi) if d == 1 else (hi, lo)}
            side = int(rng.integers(lo + 1, hi + 1))
            sizes.add((side, side))
            if k <= 5:
                sizes.add((hi, hi))
            cases += [(k, d, h, w) for h, w in sorted(sizes)]
    # Per-axis kernel sizes and dilations, as NATTEN accepts.
    cases += [((3, 5), (2, 1), 7, 9), ((5, 3), (1, 3), 12, 9)]
    return cases


CASES = _make_cases()
CASE_IDS = [f"K{k}-d{d}-{h}x{w}".replace(" ", "") for k, d, h, w in CASES]
# Small XXT-like shapes checked in float32 as well (the dtype used in training).
F32_CASES = [(5, 1, 9, 9), (9, 1, 9, 9), (7, 1, 7, 7), (3, 2, 11, 8)]


@functools.cache
def case_inputs(kernel_size, dilation, height, width):
    """Random float64 attn, value and upstream gradient for one case."""
    ks, dil = _pair(kernel_size), _pair(dilation)
    rng = np.random.default_rng([*ks, *dil, height, width])
    attn = rng.standard_normal((2, 2, height, width, ks[0] * ks[1]))
    value = rng.standard_normal((2, 2, height, width, 3))
    return attn, value, rng.standard_normal(value.shape)


@functools.cache
def case_oracle(kernel_size, dilation, height, width):
    """The oracle's (out, d_attn, d_value) for :func:`case_inputs`."""
    inputs = case_inputs(kernel_size, dilation, height, width)
    return oracle_av(*inputs, _pair(kernel_size), _pair(dilation))


def run_torch(attn, value, grad_out, kernel_size, dilation, dtype=torch.float64):
    a = torch.tensor(attn, dtype=dtype, device=TORCH_DEVICE, requires_grad=True)
    v = torch.tensor(value, dtype=dtype, device=TORCH_DEVICE, requires_grad=True)
    out = na2d_torch.na2d_av(a, v, kernel_size, dilation)
    out.backward(torch.tensor(grad_out, dtype=dtype, device=TORCH_DEVICE))
    return tuple(t.detach().double().cpu().numpy() for t in (out, a.grad, v.grad))


def run_jittor(attn, value, grad_out, kernel_size, dilation, dtype=jt.float64):
    a = jt.array(attn, dtype=dtype)
    v = jt.array(value, dtype=dtype)
    out = na2d_jittor.na2d_av(a, v, kernel_size, dilation)
    d_attn, d_value = jt.grad((out * jt.array(grad_out, dtype=dtype)).sum(), [a, v])
    return tuple(x.numpy().astype(np.float64) for x in (out, d_attn, d_value))


def max_errors(got, expected):
    return [float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True)]


@pytest.fixture(autouse=True)
def _fresh_backend(monkeypatch):
    """Every test starts from an unset OVERLOCK_NA2D and an unresolved backend."""
    monkeypatch.delenv(na2d_torch.ENV_VAR, raising=False)
    na2d_torch.set_na2d_backend(None)
    yield
    na2d_torch.set_na2d_backend(None)


@pytest.fixture
def native(monkeypatch):
    na2d_torch.set_na2d_backend("native")


# --------------------------------------------------------------------------------------------
# Window rule


def test_window_start_hand_computed():
    # L=10, K=5, d=1: windows are [0..4] for i <= 2, centred in the middle, [5..9] for i >= 7.
    assert [window_start(i, 10, 5, 1) for i in range(10)] == [0, 0, 0, 1, 2, 3, 4, 5, 5, 5]
    # L=9, K=3, d=2: evens 0,2,4,6,8 and odds 1,3,5,7 are separate subsequences.
    assert [window_start(i, 9, 3, 2) for i in range(9)] == [0, 1, 0, 1, 2, 3, 4, 3, 4]


@pytest.mark.parametrize("kernel_size", [3, 5, 7, 9, 11, 13])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_window_start_matches_oracle(kernel_size, dilation):
    for length in range(kernel_size * dilation, 2 * kernel_size * dilation + 4):
        for i in range(length):
            start = window_start(i, length, kernel_size, dilation)
            got = [start + k * dilation for k in range(kernel_size)]
            assert got == oracle_neighbours(i, length, kernel_size, dilation), (length, i)


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
@pytest.mark.parametrize("dilation", [1, 2])
def test_minimum_map_window_is_whole_subsequence(kernel_size, dilation, native):
    """At H = W = K*d, borders shift every window inward until it is the query's whole
    dilation group; with uniform weights every output is that group's mean."""
    size = kernel_size * dilation
    table = neighbour_table(size, size, (kernel_size,) * 2, (dilation,) * 2)
    for q in range(size * size):
        i, j = divmod(q, size)
        rows, cols = range(i % dilation, size, dilation), range(j % dilation, size, dilation)
        assert set(table[q].tolist()) == {r * size + c for r in rows for c in cols}

    value = np.random.default_rng(1).standard_normal((1, 2, size, size, 3))
    attn = np.full((1, 2, size, size, kernel_size**2), 1.0 / kernel_size**2)
    expected = np.empty_like(value)
    for i in range(size):
        for j in range(size):
            expected[:, :, i, j] = value[
                :, :, i % dilation :: dilation, j % dilation :: dilation
            ].mean((2, 3))
    out_t = na2d_torch.na2d_av(torch.tensor(attn), torch.tensor(value), kernel_size, dilation)
    out_j = na2d_jittor.na2d_av(
        jt.array(attn, dtype=jt.float64), jt.array(value, dtype=jt.float64), kernel_size, dilation
    )
    np.testing.assert_allclose(out_t.numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out_j.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kernel_size", [3, 5, 7, 13])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_torch_index_arithmetic_is_the_numpy_table(kernel_size, dilation):
    """The PyTorch op computes its table with tensor operations (traceable); same entries."""
    for height in range(kernel_size * dilation, kernel_size * dilation + 5):
        width = height + 3
        ks, dil = (kernel_size, kernel_size), (dilation, dilation)
        got = na2d_torch.neighbour_index(height, width, ks, dil, torch.device("cpu"))
        assert got.dtype == torch.int64
        np.testing.assert_array_equal(got.numpy(), neighbour_table(height, width, ks, dil))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript_native_op_matches_eager(native):
    """TorchScript compiles the native op (its own copy of the dense-or-gather choice)."""
    scripted = torch.jit.script(na2d_torch.na2d_av_native)
    rng = np.random.default_rng(3)
    for size, k in [(9, 5), (20, 5), (21, 5), (9, 9)]:  # both sides of DENSE_MAX_RATIO
        attn = torch.tensor(rng.standard_normal((2, 3, size, size, k * k)), dtype=torch.float32)
        value = torch.tensor(rng.standard_normal((2, 3, size, size, 4)), dtype=torch.float32)
        want = na2d_torch.na2d_av(attn, value, k)
        assert torch.equal(scripted(attn, value, (k, k), (1, 1)), want), size


# --------------------------------------------------------------------------------------------
# Forward and gradients against the oracle


@pytest.mark.parametrize("form", ["dense", "gather"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_torch_native_matches_oracle(case, form, native, monkeypatch):
    # DENSE_MAX_RATIO picks the form from H*W / K**2; pin it to exercise both on every case.
    monkeypatch.setattr(na2d_torch, "DENSE_MAX_RATIO", float("inf") if form == "dense" else 0)
    kernel_size, dilation, height, width = case
    inputs = case_inputs(*case)
    expected = case_oracle(*case)
    errors = max_errors(run_torch(*inputs, kernel_size, dilation), expected)
    assert max(errors) <= 1e-10, errors


@pytest.mark.parametrize("form", ["kernel", "reindex"])  # CPU C++ kernels; the CUDA form
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_jittor_matches_oracle(case, form, monkeypatch):
    monkeypatch.setattr(na2d_jittor, "CPU_FORM", form)
    kernel_size, dilation, height, width = case
    inputs = case_inputs(*case)
    expected = case_oracle(*case)
    errors = max_errors(run_jittor(*inputs, kernel_size, dilation), expected)
    assert max(errors) <= 1e-10, errors


@pytest.mark.parametrize("dtype", [jt.float64, jt.float32])
@pytest.mark.parametrize("dim", [8, 13, 24, 40])
def test_jittor_kernels_sum_wide_value_rows(dim, dtype):
    """The CPU kernels sum rows in 8-lane vectors plus a scalar rest: value dims with and
    without a rest (the cases above use dim 3, the rest alone)."""
    rng = np.random.default_rng(dim)
    attn = rng.standard_normal((2, 2, 9, 8, 25))
    value = rng.standard_normal((2, 2, 9, 8, dim))
    grad_out = rng.standard_normal(value.shape)
    if dtype == jt.float32:  # exactly representable inputs: only the ops' rounding remains
        attn, value, grad_out = (
            x.astype(np.float32).astype(np.float64) for x in (attn, value, grad_out)
        )
    expected = oracle_av(attn, value, grad_out, (5, 5), (1, 1))
    errors = max_errors(run_jittor(attn, value, grad_out, 5, 1, dtype), expected)
    assert max(errors) <= (1e-10 if dtype == jt.float64 else 1e-4), errors


@pytest.mark.parametrize("case", F32_CASES, ids=[f"K{k}-d{d}-{h}x{w}" for k, d, h, w in F32_CASES])
def test_float32_matches_oracle(case, native):
    """float32 as in training: softmax weights, inputs exactly representable in float32 (so
    the error is the ops' own rounding), compared with the float64 oracle."""
    kernel_size, dilation, height, width = case
    attn, value, grad_out = case_inputs(*case)
    attn = np.exp(attn) / np.exp(attn).sum(-1, keepdims=True)
    inputs = [x.astype(np.float32).astype(np.float64) for x in (attn, value, grad_out)]
    expected = oracle_av(*inputs, _pair(kernel_size), _pair(dilation))
    torch_errors = max_errors(run_torch(*inputs, kernel_size, dilation, torch.float32), expected)
    jittor_errors = max_errors(run_jittor(*inputs, kernel_size, dilation, jt.float32), expected)
    assert max(torch_errors) <= 1e-5, torch_errors
    assert max(jittor_errors) <= 1e-5, jittor_errors


def test_attn_is_cast_to_value_dtype(native):
    attn, value, _ = case_inputs(3, 1, 5, 6)
    expected = case_oracle(3, 1, 5, 6)[0]
    out_t = na2d_torch.na2d_av(torch.tensor(attn, dtype=torch.float32), torch.tensor(value), 3)
    out_j = na2d_jittor.na2d_av(
        jt.array(attn, dtype=jt.float32), jt.array(value, dtype=jt.float64), 3
    )
    assert out_t.dtype == torch.float64 and out_j.dtype == jt.float64
    # Only attn's float32 rounding remains.
    assert np.abs(out_t.numpy() - expected).max() < 1e-5
    assert np.abs(out_j.numpy() - expected).max() < 1e-5


def test_torch_strided_inputs(native):
    """OverLoCK passes views (value[0] of a rearranged tensor); strides must not matter."""
    attn, value, _ = case_inputs(5, 1, 9, 9)
    expected = case_oracle(5, 1, 9, 9)[0]
    attn_t = torch.tensor(np.stack([attn, attn], axis=-1))[..., 0]
    value_t = torch.tensor(np.stack([value, value], axis=-1))[..., 1]
    assert attn_t.stride(-1) == 2 and value_t.stride(-1) == 2
    out = na2d_torch.na2d_av(attn_t, value_t, 5)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Argument checks (shared by both frameworks, so each must reach them)

BAD_ARGS = [
    # attn shape, value shape, kernel_size, dilation, message pattern
    pytest.param(
        (1, 1, 8, 8, 16),
        (1, 1, 8, 8, 4),
        4,
        1,
        r"kernel_size must be an odd integer >= 3",
        id="even-K",
    ),
    pytest.param(
        (1, 1, 8, 8, 1),
        (1, 1, 8, 8, 4),
        1,
        1,
        r"kernel_size must be an odd integer >= 3",
        id="K1",
    ),
    pytest.param(
        (1, 1, 8, 8, 12),
        (1, 1, 8, 8, 4),
        (3, 4),
        1,
        r"kernel_size must be .* got \(3, 4\)",
        id="even-K-pair",
    ),
    pytest.param((1, 1, 8, 8, 9), (1, 1, 8, 8, 4), True, 1, r"kernel_size must be", id="K-bool"),
    pytest.param(
        (1, 1, 8, 8, 9), (1, 1, 8, 8, 4), 3, 0, r"dilation must be an integer >= 1", id="d0"
    ),
    pytest.param((1, 1, 8, 8, 9), (1, 1, 8, 8, 4), 3, (1, 2, 3), r"dilation must be", id="d3"),
    pytest.param(
        (1, 1, 5, 8, 9),
        (1, 1, 5, 8, 4),
        3,
        2,
        r"value height 5 is smaller than .* = 6",
        id="Kd-gt-H",
    ),
    pytest.param(
        (1, 1, 8, 5, 9),
        (1, 1, 8, 5, 4),
        3,
        2,
        r"value width 5 is smaller than .* = 6",
        id="Kd-gt-W",
    ),
    pytest.param(
        (1, 1, 8, 8, 4),
        (1, 1, 8, 8, 4),
        5,
        1,
        r"attn.shape\[-1\] must be .* = 25, got 4",
        id="attn-last-dim",
    ),
    pytest.param(
        (1, 1, 8, 8, 9),
        (1, 2, 8, 8, 4),
        3,
        1,
        r"must agree in \(batch, heads, height, width\)",
        id="shape-mismatch",
    ),
    pytest.param((1, 1, 8, 8, 9), (1, 8, 8, 4), 3, 1, r"value must be 5-D", id="value-4d"),
    pytest.param((1, 8, 8, 9), (1, 1, 8, 8, 4), 3, 1, r"attn must be 5-D", id="attn-4d"),
]


@pytest.mark.parametrize("framework", ["torch", "jittor"])
@pytest.mark.parametrize(
    ("attn_shape", "value_shape", "kernel_size", "dilation", "message"), BAD_ARGS
)
def test_invalid_arguments_raise(
    attn_shape, value_shape, kernel_size, dilation, message, framework, native
):
    if framework == "torch":
        attn, value, op = torch.zeros(attn_shape), torch.zeros(value_shape), na2d_torch.na2d_av
    else:
        attn, value, op = jt.zeros(attn_shape), jt.zeros(value_shape), na2d_jittor.na2d_av
    with pytest.raises(ValueError, match=message):
        op(attn, value, kernel_size, dilation)


# --------------------------------------------------------------------------------------------
# Backend selection (PyTorch)


def _fake_natten(monkeypatch, version):
    """Install a stand-in ``natten`` package whose na2d_av records its calls."""
    calls = []

    def fake_na2d_av(attn, value, kernel_size, dilation):
        calls.append((kernel_size, dilation))
        return torch.zeros_like(value)

    functional = types.ModuleType("natten.functional")
    functional.na2d_av = fake_na2d_av
    natten = types.ModuleType("natten")
    natten.__version__ = version
    natten.functional = functional
    monkeypatch.setitem(sys.modules, "natten", natten)
    monkeypatch.setitem(sys.modules, "natten.functional", functional)
    return calls


def test_forcing_unavailable_natten_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "natten", None)  # makes `import natten` fail
    with pytest.raises(RuntimeError, match="'natten' was forced .* NATTEN not importable"):
        na2d_torch.set_na2d_backend("natten")
    na2d_torch.set_na2d_backend(None)
    monkeypatch.setenv(na2d_torch.ENV_VAR, "natten")
    with pytest.raises(RuntimeError, match="NATTEN not importable"):
        na2d_torch.na2d_av(torch.zeros(1, 1, 3, 3, 9), torch.zeros(1, 1, 3, 3, 2), 3)


def test_auto_without_natten_is_native(monkeypatch, capfd):
    monkeypatch.setitem(sys.modules, "natten", None)
    monkeypatch.setenv(na2d_torch.ENV_VAR, "auto")
    assert na2d_torch.na2d_backend() == "native"
    for _ in range(3):
        na2d_torch.na2d_av(torch.zeros(1, 1, 3, 3, 9), torch.zeros(1, 1, 3, 3, 2), 3)
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("[na2d]")]
    assert len(lines) == 1 and "native PyTorch op" in lines[0], lines


def test_auto_uses_natten_when_importable(monkeypatch, capfd):
    calls = _fake_natten(monkeypatch, "0.17.4")
    assert na2d_torch.na2d_backend() == "natten"
    na2d_torch.na2d_av(torch.zeros(1, 1, 6, 6, 9), torch.zeros(1, 1, 6, 6, 2), 3, 2)
    assert calls == [((3, 3), (2, 2))]
    assert "NATTEN's kernel (NATTEN 0.17.4)" in capfd.readouterr().err
    # OVERLOCK_NA2D=native overrides an importable NATTEN.
    monkeypatch.setenv(na2d_torch.ENV_VAR, "native")
    na2d_torch.set_na2d_backend(None)
    assert na2d_torch.na2d_backend() == "native"
    na2d_torch.na2d_av(torch.zeros(1, 1, 6, 6, 9), torch.zeros(1, 1, 6, 6, 2), 3, 2)
    assert len(calls) == 1


def test_natten_without_na2d_av_is_not_used(monkeypatch):
    _fake_natten(monkeypatch, "0.20.1")
    assert na2d_torch.na2d_backend() == "native"
    with pytest.raises(RuntimeError, match="0.20.1 has no na2d_av"):
        na2d_torch.set_na2d_backend("natten")


def test_unknown_backend_names_raise(monkeypatch):
    with pytest.raises(ValueError, match="one of .*'auto', 'natten', 'native'.* got 'fast'"):
        na2d_torch.set_na2d_backend("fast")
    monkeypatch.setenv(na2d_torch.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="OVERLOCK_NA2D must be one of"):
        na2d_torch.na2d_backend()
