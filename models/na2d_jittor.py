"""2-D neighbourhood attention "AV" for Jittor, with NATTEN's ``na2d_av`` semantics.

Twin of ``models/na2d_torch.py`` (there is no NATTEN for Jittor, so no backend switch); the
window rule and argument checks come from ``models/na2d_common.py``.

On the CPU: hand-written C++ kernels (``jt.code``, OpenMP; Jittor's generated CPU loops are
single-threaded), one for the forward and one for both gradients, reading neighbours straight
through the shared index table, so no neighbour tensor exists at all. On CUDA: the fused
``reindex`` form (``value.reindex`` through the table, times the broadcast weights, summed over
the window), which Jittor compiles into one kernel per direction without materialising the
(B, G, H*W, K*K, C) neighbour tensor.

Measured on this project's 2-core CPU (Jittor 1.3.11, float32, median of 21, machine otherwise
idle), forward / forward+backward in ms, on the shapes OverLoCK-XXT/XT use at batch 64. The
kernels take the value dim as a compile-time constant and sum in explicit 8-lane vectors; the
first version, with a run-time dim, is shown for comparison (g++ vectorised its tap loop with
gathers). NATTEN's column is from an earlier session (``bench.py`` times it on every run).

  attn shape (value dim C)  K   C++ kernels   first version   reindex form   NATTEN 0.17.4 CPU
  (64,2,9,9,25)    C=24     5   0.10 / 0.38   0.53 / 1.17     3.5 / 13.9     25 / 300
  (64,2,9,9,81)    C=24     9   0.37 / 1.19   1.70 / 3.70     11.0 / 44.8    78 / 958
  (64,4,7,7,25)    C=16     5   0.10 / 0.34   0.43 / 0.95     2.9 / 11.6     20 / 290
  (64,4,7,7,49)    C=16     7   0.20 / 0.64   0.96 / 1.91     5.7 / 22.3     38 / 567

The two forms agree to float32 rounding (6e-5 on outputs and gradients of magnitude ~100).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from core.jittor_env import code as jittor_code
from core.jittor_env import cuda_forms, jt

from .na2d_common import Pair, check_na2d_args, neighbour_table

CPU_FORM = "kernel"  # "reindex": the CUDA form on the CPU too (tests and benchmarks)


def na2d_av(
    attn: jt.Var,
    value: jt.Var,
    kernel_size: int | Sequence[int],
    dilation: int | Sequence[int] = 1,
) -> jt.Var:
    """Apply 2-D neighbourhood attention weights to values (NATTEN's ``na2d_av``).

    ``out[b, g, i, j] = sum_{ki, kj} attn[b, g, i, j, ki * K1 + kj] *
    value[b, g, si + ki * d0, sj + kj * d1]``, with the window start ``(si, sj)`` of query
    ``(i, j)`` from :func:`models.na2d_common.window_start`: the window is centred and shifted
    inward at the borders, never padded.

    Args:
        attn: weights ``(batch, heads, height, width, K0 * K1)``; cast to ``value.dtype``
            as NATTEN does.
        value: ``(batch, heads, height, width, dim)``.
        kernel_size: odd int ``>= 3`` or a (height, width) pair of them.
        dilation: int ``>= 1`` or a (height, width) pair; ``height >= K0 * d0`` and
            ``width >= K1 * d1`` are required.

    Returns:
        ``(batch, heads, height, width, dim)``, differentiable w.r.t. ``attn`` and ``value``.

    Raises:
        ValueError: invalid argument (see :func:`models.na2d_common.check_na2d_args`).
    """
    ks, dil = check_na2d_args(attn.shape, value.shape, kernel_size, dilation)
    attn = attn.cast(value.dtype)
    B, G, H, W, C = value.shape
    table = jt.array(index_table(H, W, ks, dil))
    attn = attn.reshape(B, G, H * W, ks[0] * ks[1])
    value = value.reshape(B, G, H * W, C)
    if cuda_forms() or CPU_FORM == "reindex":
        out = _av_reindex(attn, value, table)
    else:
        out = _AVKernel.apply(attn, value, table)
    return out.reshape(B, G, H, W, C)


@functools.lru_cache(maxsize=256)
def index_table(height: int, width: int, kernel_size: Pair, dilation: Pair) -> np.ndarray:
    """:func:`neighbour_table` as int32, the index type Jittor's reindex kernels use."""
    return neighbour_table(height, width, kernel_size, dilation).astype(np.int32)


def _av_reindex(attn: jt.Var, value: jt.Var, table: jt.Var) -> jt.Var:
    """attn (B, G, N, KK), value (B, G, N, C) -> (B, G, N, C) via fused gathered neighbours."""
    B, G, N, KK = attn.shape
    shape = [B, G, N, KK, value.shape[3]]
    # @e0(n, k) reads table[n, k]; the kernel key holds no size, so no recompile per shape.
    neighbours = value.reindex(shape, ["i0", "i1", "@e0(i2,i3)", "i4"], extras=[table])
    return (neighbours * attn.broadcast(shape, [4])).sum(3)


# CPU kernels (C++ with OpenMP; Jittor's generated CPU loops are single-threaded). Shapes:
# attn (BG, N, KK), value / out (BG, N, C), table (N, KK) int32. Every output element is written
# by one thread: forward and d_attn are gathers, parallel over (bg, n); d_value is a scatter-add,
# parallel over bg only, so no two threads add into the same row.
#
# AV_ROWS, the arithmetic of one query row, is shared with models/contmix_jittor.py. CDIM (the
# value dim) is a compile-time constant and each row is summed in explicit 8-lane vectors held
# in registers (left to itself, g++ vectorised the tap loop with gathers, 6x slower for dim 24).
AV_ROWS = r"""
    typedef in1_type T;  // attn is cast to the value type before the kernels
    typedef T lanes __attribute__((vector_size(8 * sizeof(T))));
    constexpr int NV = CDIM / 8, REST = CDIM % 8;
    // o[c] = sum_k a[k] * values[t[k], c]
    auto av_row = [](const T* a, const int* t, const T* values, int KK, T* o) {
        lanes acc[NV > 0 ? NV : 1] = {};
        T rest[REST > 0 ? REST : 1] = {};
        for (int k = 0; k < KK; k++) {
            const T* v = values + (size_t)t[k] * CDIM;
            const T w = a[k];
            for (int j = 0; j < NV; j++) {
                lanes x;
                std::memcpy(&x, v + 8 * j, sizeof x);
                acc[j] += w * x;
            }
            for (int c = 0; c < REST; c++) rest[c] += w * v[8 * NV + c];
        }
        for (int j = 0; j < NV; j++) std::memcpy(o + 8 * j, &acc[j], sizeof acc[j]);
        for (int c = 0; c < REST; c++) o[8 * NV + c] = rest[c];
    };
    // da[k] = sum_c g[c] * values[t[k], c]
    auto attn_grad_row = [](const T* g, const int* t, const T* values, int KK, T* da) {
        lanes gv[NV > 0 ? NV : 1];
        for (int j = 0; j < NV; j++) std::memcpy(&gv[j], g + 8 * j, sizeof gv[j]);
        for (int k = 0; k < KK; k++) {
            const T* v = values + (size_t)t[k] * CDIM;
            lanes acc = {};
            for (int j = 0; j < NV; j++) {
                lanes x;
                std::memcpy(&x, v + 8 * j, sizeof x);
                acc += gv[j] * x;
            }
            T sum = 0;
            for (int i = 0; i < 8; i++) sum += acc[i];
            for (int c = 8 * NV; c < CDIM; c++) sum += g[c] * v[c];
            da[k] = sum;
        }
    };
    // dv[t[k], c] += a[k] * g[c]
    auto value_grad_row = [](const T* a, const T* g, const int* t, int KK, T* dv) {
        lanes gv[NV > 0 ? NV : 1];
        for (int j = 0; j < NV; j++) std::memcpy(&gv[j], g + 8 * j, sizeof gv[j]);
        for (int k = 0; k < KK; k++) {
            T* row = dv + (size_t)t[k] * CDIM;
            const T w = a[k];
            for (int j = 0; j < NV; j++) {
                lanes r;
                std::memcpy(&r, row + 8 * j, sizeof r);
                r += w * gv[j];
                std::memcpy(row + 8 * j, &r, sizeof r);
            }
            for (int c = 8 * NV; c < CDIM; c++) row[c] += w * g[c];
        }
    };
"""
_FORWARD = r"""
    const int BG = in0_shape0 * in0_shape1, N = in0_shape2, KK = in0_shape3;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int bg = 0; bg < BG; bg++)
        for (int n = 0; n < N; n++)
            av_row(in0_p + ((size_t)bg * N + n) * KK, in2_p + (size_t)n * KK,
                   in1_p + (size_t)bg * N * CDIM, KK, out0_p + ((size_t)bg * N + n) * CDIM);
"""
_BACKWARD = r"""
    const int BG = in0_shape0 * in0_shape1, N = in0_shape2, KK = in0_shape3;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int bg = 0; bg < BG; bg++)
        for (int n = 0; n < N; n++)
            attn_grad_row(in3_p + ((size_t)bg * N + n) * CDIM, in2_p + (size_t)n * KK,
                          in1_p + (size_t)bg * N * CDIM, KK, out0_p + ((size_t)bg * N + n) * KK);
    #pragma omp parallel for schedule(static)
    for (int bg = 0; bg < BG; bg++) {
        T* dv = out1_p + (size_t)bg * N * CDIM;
        for (size_t i = 0; i < (size_t)N * CDIM; i++) dv[i] = 0;
        for (int n = 0; n < N; n++)
            value_grad_row(in0_p + ((size_t)bg * N + n) * KK, in3_p + ((size_t)bg * N + n) * CDIM,
                           in2_p + (size_t)n * KK, KK, dv);
    }
"""


class _AVKernel(jt.Function):
    """attn (B, G, N, KK), value (B, G, N, C), table -> (B, G, N, C); hand-written CPU kernels."""

    def execute(self, attn: jt.Var, value: jt.Var, table: jt.Var) -> jt.Var:
        self.saved = attn, value, table
        self.header = f"#include <cstring>\n#define CDIM {value.shape[3]}\n"
        return jittor_code(
            value.shape,
            value.dtype,
            [attn, value, table],
            cpu_header=self.header,
            cpu_src=AV_ROWS + _FORWARD,
        )

    def grad(self, grad_out: jt.Var) -> tuple[jt.Var, jt.Var, None]:
        attn, value, table = self.saved
        d_attn, d_value = jittor_code(
            [attn.shape, value.shape],
            [attn.dtype, value.dtype],
            [attn, value, table, grad_out],
            cpu_header=self.header,
            cpu_src=AV_ROWS + _BACKWARD,
        )
        return d_attn, d_value, None


__all__ = ["na2d_av"]
