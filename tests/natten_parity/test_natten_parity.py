"""Parity of the project's na2d_av (Jittor, and the native PyTorch op) with NATTEN 0.17's.

Runs only in the NATTEN environment: ``.venv-natten/bin/python -m pytest tests/natten_parity``
(pyproject's norecursedirs keeps it out of the default run). Same grid as tests/models/test_na2d.py;
NATTEN's CPU kernels take float32 and float64, both are checked. ``OVERLOCK_TEST_DEVICE=cuda``
runs NATTEN's CUDA kernels instead (``make gpu-check``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

natten_functional = pytest.importorskip(
    "natten.functional", reason="NATTEN is not installed (it lives in .venv-natten only)"
)
if not hasattr(natten_functional, "na2d_av"):
    pytest.skip("this NATTEN has no na2d_av (removed in 0.20)", allow_module_level=True)

from core.jittor_env import jt  # noqa: E402
from models import na2d_torch  # noqa: E402
from tests.models.test_na2d import (  # noqa: E402
    CASE_IDS,
    CASES,
    F32_CASES,
    TORCH_DEVICE,
    case_inputs,
    max_errors,
    run_jittor,
    run_torch,
)

TOLERANCE = 1e-5


def run_natten(attn, value, grad_out, kernel_size, dilation, dtype=torch.float64):
    a = torch.tensor(attn, dtype=dtype, device=TORCH_DEVICE, requires_grad=True)
    v = torch.tensor(value, dtype=dtype, device=TORCH_DEVICE, requires_grad=True)
    out = natten_functional.na2d_av(a, v, kernel_size, dilation)
    out.backward(torch.tensor(grad_out, dtype=dtype, device=TORCH_DEVICE))
    return tuple(t.detach().double().cpu().numpy() for t in (out, a.grad, v.grad))


@pytest.fixture
def native_torch():
    na2d_torch.set_na2d_backend("native")
    yield
    na2d_torch.set_na2d_backend(None)


def test_auto_backend_is_natten():
    na2d_torch.set_na2d_backend("auto")
    try:
        assert na2d_torch.na2d_backend() == "natten"
        attn, value, grad_out = case_inputs(5, 2, 11, 13)
        got = run_torch(attn, value, grad_out, 5, 2)
        for ours, natten in zip(got, run_natten(attn, value, grad_out, 5, 2), strict=True):
            np.testing.assert_array_equal(ours, natten)
    finally:
        na2d_torch.set_na2d_backend(None)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float64_matches_natten(case, native_torch):
    kernel_size, dilation, height, width = case
    inputs = case_inputs(*case)
    expected = run_natten(*inputs, kernel_size, dilation)
    torch_errors = max_errors(run_torch(*inputs, kernel_size, dilation), expected)
    jittor_errors = max_errors(run_jittor(*inputs, kernel_size, dilation), expected)
    assert max(torch_errors) <= TOLERANCE, torch_errors
    assert max(jittor_errors) <= TOLERANCE, jittor_errors


@pytest.mark.parametrize("case", F32_CASES, ids=[f"K{k}-d{d}-{h}x{w}" for k, d, h, w in F32_CASES])
def test_float32_matches_natten(case, native_torch):
    kernel_size, dilation, height, width = case
    attn, value, grad_out = case_inputs(*case)
    attn = np.exp(attn) / np.exp(attn).sum(-1, keepdims=True)  # softmax weights, as in OverLoCK
    inputs = (attn, value, grad_out)
    expected = run_natten(*inputs, kernel_size, dilation, torch.float32)
    torch_errors = max_errors(run_torch(*inputs, kernel_size, dilation, torch.float32), expected)
    jittor_errors = max_errors(run_jittor(*inputs, kernel_size, dilation, jt.float32), expected)
    assert max(torch_errors) <= TOLERANCE, torch_errors
    assert max(jittor_errors) <= TOLERANCE, jittor_errors
