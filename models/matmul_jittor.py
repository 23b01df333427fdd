"""``a^T @ b`` over many small matrices, for Jittor on the CPU.

ContMix's dynamic-kernel weights are ``query^T @ key`` per (image, head): batch x heads products
of an (N x C)^T (C x 49) shape, N <= 81. Jittor runs a batched ``@`` on the CPU as a broadcast
multiply and a reduction in its generated single-threaded loops; these kernels run the products
over (image, head) with OpenMP, each inner loop a contiguous multiply-add. On CUDA Jittor's own
``@`` is used. Results equal ``a.transpose(-1, -2) @ b`` up to float rounding.
"""

from __future__ import annotations

from core.jittor_env import code as jittor_code
from core.jittor_env import cuda_forms, jt

# a: (M, C, N), b: (M, C, L) -> out (M, N, L); M = flattened batch dims.
_HEADER = r"""
    const int M = in0_shape0, C = in0_shape1, N = in0_shape2, L = in1_shape2;
"""
_FORWARD = r"""
    #pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        const in0_type* __restrict__ a = in0_p + (size_t)m * C * N;
        const in1_type* __restrict__ b = in1_p + (size_t)m * C * L;
        out0_type* __restrict__ o = out0_p + (size_t)m * N * L;
        for (int i = 0; i < N * L; i++) o[i] = 0;
        for (int c = 0; c < C; c++)
            for (int n = 0; n < N; n++) {
                const in0_type an = a[(size_t)c * N + n];
                const in1_type* __restrict__ br = b + (size_t)c * L;
                out0_type* __restrict__ orow = o + (size_t)n * L;
                for (int l = 0; l < L; l++) orow[l] += an * br[l];
            }
    }
"""
_BACKWARD = r"""
    // in0: a, in1: b, in2: dout (M, N, L); out0: da (M, C, N), out1: db (M, C, L)
    #pragma omp parallel
    {
        std::vector<in2_type> dout_t((size_t)L * N);  // dout of one m, transposed: (L, N)
        #pragma omp for schedule(static)
        for (int m = 0; m < M; m++) {
            const in0_type* __restrict__ a = in0_p + (size_t)m * C * N;
            const in1_type* __restrict__ b = in1_p + (size_t)m * C * L;
            const in2_type* __restrict__ g = in2_p + (size_t)m * N * L;
            out0_type* __restrict__ da = out0_p + (size_t)m * C * N;
            out1_type* __restrict__ db = out1_p + (size_t)m * C * L;
            for (int n = 0; n < N; n++)
                for (int l = 0; l < L; l++) dout_t[(size_t)l * N + n] = g[(size_t)n * L + l];
            for (int i = 0; i < C * N; i++) da[i] = 0;
            for (int i = 0; i < C * L; i++) db[i] = 0;
            for (int c = 0; c < C; c++) {
                out0_type* __restrict__ da_c = da + (size_t)c * N;
                out1_type* __restrict__ db_c = db + (size_t)c * L;
                for (int l = 0; l < L; l++) {  // da[c, n] = sum_l b[c, l] dout[n, l]
                    const in1_type bl = b[(size_t)c * L + l];
                    const in2_type* __restrict__ gt = dout_t.data() + (size_t)l * N;
                    for (int n = 0; n < N; n++) da_c[n] += bl * gt[n];
                }
                for (int n = 0; n < N; n++) {  // db[c, l] = sum_n a[c, n] dout[n, l]
                    const in0_type an = a[(size_t)c * N + n];
                    const in2_type* __restrict__ gr = g + (size_t)n * L;
                    for (int l = 0; l < L; l++) db_c[l] += an * gr[l];
                }
            }
        }
    }
"""
_INCLUDES = "#include <vector>\n"


class _MatmulTN(jt.Function):
    def execute(self, a: jt.Var, b: jt.Var) -> jt.Var:
        self.saved = a, b
        shape = (a.shape[0], a.shape[2], b.shape[2])
        return jittor_code(shape, a.dtype, [a, b], cpu_header=_INCLUDES, cpu_src=_HEADER + _FORWARD)

    def grad(self, grad_out: jt.Var) -> tuple[jt.Var, jt.Var]:
        a, b = self.saved
        grad_a, grad_b = jittor_code(
            [a.shape, b.shape],
            [a.dtype, b.dtype],
            [a, b, grad_out],
            cpu_header=_INCLUDES,
            cpu_src=_HEADER + _BACKWARD,
        )
        return grad_a, grad_b


def matmul_tn(a: jt.Var, b: jt.Var) -> jt.Var:
    """``a.transpose(-1, -2) @ b`` for ``a`` (..., C, N) and ``b`` (..., C, L) -> (..., N, L)."""
    if a.shape[:-1] != b.shape[:-1]:
        raise ValueError(f"matmul_tn: shapes {a.shape} and {b.shape} differ before the last axis")
    if cuda_forms():
        return a.transpose(-1, -2) @ b
    batch, (c, n), length = a.shape[:-2], a.shape[-2:], b.shape[-1]
    flat = _MatmulTN()(a.reshape(-1, c, n), b.reshape(-1, c, length))
    return flat.reshape(*batch, n, length)


__all__ = ["matmul_tn"]
