"""ContMix's pair of ``na2d_av`` calls for Jittor, read from and written to the feature map's own
layout.

ContMix applies the small-window kernels to the first half of the channels and the large-window
kernels to the second half, in ``num_heads`` groups. Written with ``na2d_av``
(``models/na2d_jittor.py``), that is: permute the map ``b (m g c) h w -> m b g h w c``, slice the
two halves, two ``na2d_av`` calls, concatenate, permute back: five copies of the map in Jittor's
single-threaded loops, about a sixth of the model's evaluation time on the CPU. On the CPU the
kernels here do the same per (image, half, group) plane, transposing each plane in a per-thread
buffer around the very row arithmetic of ``na2d_av``'s kernels (``AV_ROWS``): the numbers are
bit for bit those of the composition. On CUDA (and in the CUDA forms) the composition runs.
"""

from __future__ import annotations

from core.jittor_env import code as jittor_code
from core.jittor_env import cuda_forms, jt

from .na2d_common import check_na2d_args
from .na2d_jittor import AV_ROWS, index_table, na2d_av

_INCLUDES = "#include <algorithm>\n#include <cstring>\n#include <vector>\n"
# in0: attn1 (B, G, N, KK1), in1: attn2 (B, G, N, KK2), in2: x as (B, 2, G, CDIM, N),
# in3 / in4: the tables (N, KK1) / (N, KK2). Plane p = (b * 2 + m) * G + g of x.
_PLANES = r"""
    const int B = in0_shape0, G = in0_shape1, N = in0_shape2;
    const int KK1 = in0_shape3, KK2 = in1_shape3;
    auto attn_of = [&](const T* a1, const T* a2, int p) {
        const int b = p / (2 * G), m = (p / G) % 2, g = p % G;
        return m ? a2 + ((size_t)b * G + g) * N * KK2 : a1 + ((size_t)b * G + g) * N * KK1;
    };
    auto to_rows = [&](const T* plane, T* rows) {  // (CDIM, N) -> (N, CDIM)
        for (int c = 0; c < CDIM; c++)
            for (int i = 0; i < N; i++) rows[(size_t)i * CDIM + c] = plane[(size_t)c * N + i];
    };
    auto to_plane = [&](const T* rows, T* plane) {
        for (int c = 0; c < CDIM; c++)
            for (int i = 0; i < N; i++) plane[(size_t)c * N + i] = rows[(size_t)i * CDIM + c];
    };
"""
_FORWARD = r"""
    #pragma omp parallel
    {
        std::vector<T> v((size_t)N * CDIM), o((size_t)N * CDIM);
        #pragma omp for schedule(static)
        for (int p = 0; p < B * 2 * G; p++) {
            const bool small = (p / G) % 2 == 0;
            const int KK = small ? KK1 : KK2;
            const int* table = small ? in3_p : in4_p;
            const T* a = attn_of(in0_p, in1_p, p);
            to_rows(in2_p + (size_t)p * CDIM * N, v.data());
            for (int n = 0; n < N; n++)
                av_row(a + (size_t)n * KK, table + (size_t)n * KK, v.data(), KK,
                       o.data() + (size_t)n * CDIM);
            to_plane(o.data(), out0_p + (size_t)p * CDIM * N);
        }
    }
"""
# out0 / out1: d_attn1 / d_attn2, out2: d_x; in5: d_out, laid out as x.
_BACKWARD = r"""
    #pragma omp parallel
    {
        std::vector<T> v((size_t)N * CDIM), g((size_t)N * CDIM), dv((size_t)N * CDIM);
        #pragma omp for schedule(static)
        for (int p = 0; p < B * 2 * G; p++) {
            const bool small = (p / G) % 2 == 0;
            const int KK = small ? KK1 : KK2;
            const int* table = small ? in3_p : in4_p;
            const T* a = attn_of(in0_p, in1_p, p);
            T* da = const_cast<T*>(attn_of(out0_p, out1_p, p));
            to_rows(in2_p + (size_t)p * CDIM * N, v.data());
            to_rows(in5_p + (size_t)p * CDIM * N, g.data());
            std::fill(dv.begin(), dv.end(), T(0));
            for (int n = 0; n < N; n++) {
                const T* gn = g.data() + (size_t)n * CDIM;
                attn_grad_row(gn, table + (size_t)n * KK, v.data(), KK, da + (size_t)n * KK);
                value_grad_row(a + (size_t)n * KK, gn, table + (size_t)n * KK, KK, dv.data());
            }
            to_plane(dv.data(), out2_p + (size_t)p * CDIM * N);
        }
    }
"""


class _ContMixKernel(jt.Function):
    """attn1, attn2 (B, G, N, KK), x (B, 2, G, C, N), tables -> (B, 2, G, C, N)."""

    def execute(self, attn1, attn2, x, table1, table2) -> jt.Var:
        self.saved = attn1, attn2, x, table1, table2
        self.header = _INCLUDES + f"#define CDIM {x.shape[3]}\n"
        return jittor_code(
            x.shape,
            x.dtype,
            [attn1, attn2, x, table1, table2],
            cpu_header=self.header,
            cpu_src=AV_ROWS + _PLANES + _FORWARD,
        )

    def grad(self, grad_out: jt.Var) -> tuple[jt.Var, jt.Var, jt.Var, None, None]:
        attn1, attn2, x, table1, table2 = self.saved
        d_attn1, d_attn2, d_x = jittor_code(
            [attn1.shape, attn2.shape, x.shape],
            [attn1.dtype, attn2.dtype, x.dtype],
            [attn1, attn2, x, table1, table2, grad_out],
            cpu_header=self.header,
            cpu_src=AV_ROWS + _PLANES + _BACKWARD,
        )
        return d_attn1, d_attn2, d_x, None, None


def contmix_av(
    attn_small: jt.Var, attn_large: jt.Var, x: jt.Var, kernel_small: int, kernel_large: int
) -> jt.Var:
    """ContMix's neighbourhood attention of the map ``x`` (B, 2 * G * C, H, W): the weights
    ``attn_small`` (B, G, H, W, kernel_small**2) applied to the first G * C channels, ``attn_large``
    (B, G, H, W, kernel_large**2) to the rest, each as ``na2d_av``; returns x's shape.
    Differentiable w.r.t. both weights and ``x``.
    """
    B, _, H, W = x.shape
    G = attn_small.shape[1]
    if cuda_forms():
        value = x.reshape(B, 2, G, -1, H, W).permute(1, 0, 2, 4, 5, 3)  # m b g h w c
        small = na2d_av(attn_small, value[0], kernel_size=kernel_small)
        large = na2d_av(attn_large, value[1], kernel_size=kernel_large)
        out = jt.concat([small, large], dim=1)  # b 2g h w c
        return out.permute(0, 1, 4, 2, 3).reshape(B, -1, H, W)  # b (2g c) h w
    planes = x.reshape(B, 2, G, -1, H * W)
    value_shape = (B, G, H, W, planes.shape[3])
    for attn, kernel in ((attn_small, kernel_small), (attn_large, kernel_large)):
        check_na2d_args(attn.shape, value_shape, kernel, 1)
    tables = [jt.array(index_table(H, W, (k, k), (1, 1))) for k in (kernel_small, kernel_large)]
    attn1 = attn_small.cast(x.dtype).reshape(B, G, H * W, -1)
    attn2 = attn_large.cast(x.dtype).reshape(B, G, H * W, -1)
    return _ContMixKernel.apply(attn1, attn2, planes, *tables).reshape(B, -1, H, W)


__all__ = ["contmix_av"]
