"""Fused multi-threaded CPU kernels for OverLoCK's normalisations, GELU and softmax in Jittor.

Jittor compiles chains of element-wise ops and reductions into one C++ loop, but on the CPU that
loop runs on one thread, and a BatchNorm's backward (two reductions over N, H, W, then an
element-wise pass) or GELU's backward (erf and exp per element) becomes the largest cost of a
training step. These kernels compute the same functions with OpenMP over channels or rows and
with hand-written gradients. Each public function falls back to the plain Jittor expression on
CUDA, where Jittor's own kernels are parallel, and for types other than float32 / float64.
Results equal the plain expressions up to float rounding (sums are taken in another order).
"""

from __future__ import annotations

from core.jittor_env import code as jittor_code
from core.jittor_env import cuda_forms, jt

_INCLUDES = "#include <cmath>\n#include <vector>\n#include <omp.h>\n"


def _kernels_take(x: jt.Var) -> bool:
    """Whether the CPU kernels compute on ``x``; otherwise the plain Jittor expression does."""
    return not cuda_forms() and x.dtype in ("float32", "float64")


# --- BatchNorm with batch statistics (training) -----------------------------------------------
# x (N, C, H, W) -> y, mean (C), biased var (C); one thread per channel block. Sums are taken
# per image plane in the input's type (vectorised), then accumulated in double.
_BN_HEADER = r"""
    typedef in0_type T;
    const int N = in0_shape0, C = in0_shape1, HW = in0_shape2 * in0_shape3;
    const double count = (double)N * HW;
"""
_BN_FORWARD = r"""
    // in0: x, in1: weight, in2: bias; out0: y, out1: mean, out2: var (biased)
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double total = 0;
        for (int n = 0; n < N; n++) {
            const in0_type* x = in0_p + ((size_t)n * C + c) * HW;
            T s = 0;
            for (int i = 0; i < HW; i++) s += x[i];
            total += s;
        }
        const T mean = (T)(total / count);
        double squares = 0;
        for (int n = 0; n < N; n++) {
            const in0_type* x = in0_p + ((size_t)n * C + c) * HW;
            T s = 0;
            for (int i = 0; i < HW; i++) { const T d = x[i] - mean; s += d * d; }
            squares += s;
        }
        const T var = (T)(squares / count);
        const T scale = in1_p[c] / std::sqrt(var + EPS), shift = in2_p[c] - mean * scale;
        for (int n = 0; n < N; n++) {
            const in0_type* x = in0_p + ((size_t)n * C + c) * HW;
            out0_type* y = out0_p + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) y[i] = x[i] * scale + shift;
        }
        out1_p[c] = mean;
        out2_p[c] = var;
    }
"""
_BN_BACKWARD = r"""
    // in0: x, in1: weight, in2: mean, in3: var, in4: dy; out0: dx, out1: dweight, out2: dbias
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const T mean = in2_p[c], invstd = T(1.0) / std::sqrt(in3_p[c] + EPS);
        double sum_dy = 0, sum_dy_xc = 0;
        for (int n = 0; n < N; n++) {
            const in0_type* x = in0_p + ((size_t)n * C + c) * HW;
            const in4_type* dy = in4_p + ((size_t)n * C + c) * HW;
            T s = 0, sx = 0;
            for (int i = 0; i < HW; i++) { s += dy[i]; sx += dy[i] * (x[i] - mean); }
            sum_dy += s;
            sum_dy_xc += sx;
        }
        const T dbias = (T)sum_dy, dweight = (T)(sum_dy_xc * invstd);
        // dx = weight * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
        const T k = in1_p[c] * invstd;
        const T a = (T)(sum_dy / count);
        const T b = (T)(sum_dy_xc / count) * invstd * invstd;
        for (int n = 0; n < N; n++) {
            const in0_type* x = in0_p + ((size_t)n * C + c) * HW;
            const in4_type* dy = in4_p + ((size_t)n * C + c) * HW;
            out0_type* dx = out0_p + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) dx[i] = k * (dy[i] - a - (x[i] - mean) * b);
        }
        out1_p[c] = dweight;
        out2_p[c] = dbias;
    }
"""


class _AffineNorm(jt.Function):
    """A normalisation with affine weight and bias on an NCHW map: the forward kernel also returns
    two statistics of shape ``stats_shape`` (BatchNorm: mean and variance per channel; LayerNorm:
    mean and 1/std per pixel), which the backward kernel reads back."""

    def __init__(self, eps: float, stats_shape: tuple[int, ...], forward: str, backward: str):
        self.header = f"{_INCLUDES}#define EPS T({float(eps)!r})\n"
        self.stats_shape, self.forward, self.backward = stats_shape, forward, backward

    def execute(self, x: jt.Var, weight: jt.Var, bias: jt.Var) -> tuple[jt.Var, jt.Var, jt.Var]:
        y, stat0, stat1 = jittor_code(
            [x.shape, self.stats_shape, self.stats_shape],
            [x.dtype, x.dtype, x.dtype],
            [x, weight, bias],
            cpu_header=self.header,
            cpu_src=self.forward,
        )
        self.saved = x, weight, stat0, stat1
        return y, stat0, stat1

    def grad(self, grad_y: jt.Var | None, *_stats_grads: jt.Var | None) -> tuple:
        if grad_y is None:  # only the statistics were used: nothing flows back
            return None, None, None
        x, weight, stat0, stat1 = self.saved
        return tuple(
            jittor_code(
                [x.shape, weight.shape, weight.shape],
                [x.dtype, weight.dtype, weight.dtype],
                [x, weight, stat0, stat1, grad_y],
                cpu_header=self.header,
                cpu_src=self.backward,
            )
        )


def batch_norm_train(
    x: jt.Var, weight: jt.Var, bias: jt.Var, eps: float
) -> tuple[jt.Var, jt.Var, jt.Var]:
    """BatchNorm of an NCHW map with its own batch statistics: returns ``(y, mean, var)`` with
    ``var`` the biased variance, both over (N, H, W). ``mean`` and ``var`` are for the running
    statistics: gradients flow through ``y`` only (to x, weight and bias).
    """
    if x.ndim != 4 or weight.shape != (x.shape[1],) or bias.shape != (x.shape[1],):
        raise ValueError(f"batch_norm_train: x {x.shape}, weight {weight.shape}, bias {bias.shape}")
    if not _kernels_take(x):
        mean = x.mean(dims=[0, 2, 3])
        xc = x - mean.reshape(1, -1, 1, 1)
        var = (xc * xc).mean(dims=[0, 2, 3])
        scale = weight / jt.sqrt(var + eps)
        y = xc * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)
        return y, mean.detach(), var.detach()
    forward, backward = _BN_HEADER + _BN_FORWARD, _BN_HEADER + _BN_BACKWARD
    y, mean, var = _AffineNorm(eps, (x.shape[1],), forward, backward)(x, weight, bias)
    return y, mean.detach(), var.detach()


# --- LayerNorm over the channels of an NCHW map ----------------------------------------------
# One thread per image block; for each pixel the C channel values are H*W apart, so the loops
# run over pixels (contiguous) with per-pixel accumulators in a small buffer.
_LN_HEADER = r"""
    typedef in0_type T;
    const int N = in0_shape0, C = in0_shape1, HW = in0_shape2 * in0_shape3;
"""
_LN_FORWARD = r"""
    // in0: x, in1: weight, in2: bias; out0: y, out1: mean (N, HW), out2: rstd (N, HW)
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const in0_type* x = in0_p + (size_t)n * C * HW;
        out0_type* y = out0_p + (size_t)n * C * HW;
        T* mean = out1_p + (size_t)n * HW;
        T* rstd = out2_p + (size_t)n * HW;
        for (int i = 0; i < HW; i++) { mean[i] = 0; rstd[i] = 0; }
        for (int c = 0; c < C; c++)
            for (int i = 0; i < HW; i++) mean[i] += x[(size_t)c * HW + i];
        for (int i = 0; i < HW; i++) mean[i] /= C;
        for (int c = 0; c < C; c++)
            for (int i = 0; i < HW; i++) {
                const T d = x[(size_t)c * HW + i] - mean[i];
                rstd[i] += d * d;
            }
        for (int i = 0; i < HW; i++) rstd[i] = T(1.0) / std::sqrt(rstd[i] / C + EPS);
        for (int c = 0; c < C; c++) {
            const T w = in1_p[c], b = in2_p[c];
            for (int i = 0; i < HW; i++)
                y[(size_t)c * HW + i] = (x[(size_t)c * HW + i] - mean[i]) * rstd[i] * w + b;
        }
    }
"""
_LN_BACKWARD = r"""
    // in0: x, in1: weight, in2: mean, in3: rstd, in4: dy; out0: dx, out1: dweight, out2: dbias
    const int threads = omp_get_max_threads();
    std::vector<double> partial((size_t)threads * 2 * C, 0.0);
    std::vector<T> scratch((size_t)threads * 2 * HW);
    #pragma omp parallel
    {
        const int t = omp_get_thread_num();
        double* dw = partial.data() + (size_t)t * 2 * C;
        double* db = dw + C;
        T* a = scratch.data() + (size_t)t * 2 * HW;  // mean over c of dy * w
        T* b = a + HW;                               // mean over c of dy * w * xhat
        #pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            const in0_type* x = in0_p + (size_t)n * C * HW;
            const in4_type* dy = in4_p + (size_t)n * C * HW;
            out0_type* dx = out0_p + (size_t)n * C * HW;
            const T* mean = in2_p + (size_t)n * HW;
            const T* rstd = in3_p + (size_t)n * HW;
            for (int i = 0; i < HW; i++) { a[i] = 0; b[i] = 0; }
            for (int c = 0; c < C; c++) {
                const T w = in1_p[c];
                T sw = 0, sb = 0;
                for (int i = 0; i < HW; i++) {
                    const T g = dy[(size_t)c * HW + i];
                    const T xhat = (x[(size_t)c * HW + i] - mean[i]) * rstd[i];
                    a[i] += g * w;
                    b[i] += g * w * xhat;
                    sw += g * xhat;
                    sb += g;
                }
                dw[c] += sw;
                db[c] += sb;
            }
            for (int i = 0; i < HW; i++) { a[i] /= C; b[i] /= C; }
            for (int c = 0; c < C; c++) {
                const T w = in1_p[c];
                for (int i = 0; i < HW; i++) {
                    const T xhat = (x[(size_t)c * HW + i] - mean[i]) * rstd[i];
                    dx[(size_t)c * HW + i] =
                        rstd[i] * (dy[(size_t)c * HW + i] * w - a[i] - xhat * b[i]);
                }
            }
        }
    }
    for (int c = 0; c < C; c++) {
        double sw = 0, sb = 0;
        for (int t = 0; t < threads; t++) {
            sw += partial[(size_t)t * 2 * C + c];
            sb += partial[(size_t)t * 2 * C + C + c];
        }
        out1_p[c] = (T)sw;
        out2_p[c] = (T)sb;
    }
"""


def layer_norm_channels(x: jt.Var, weight: jt.Var, bias: jt.Var, eps: float) -> jt.Var:
    """LayerNorm over dim 1 of an NCHW map (torch's permute -> LayerNorm -> permute)."""
    if x.ndim != 4 or weight.shape != (x.shape[1],) or bias.shape != (x.shape[1],):
        raise ValueError(
            f"layer_norm_channels: x {x.shape}, weight {weight.shape}, bias {bias.shape}"
        )
    if not _kernels_take(x):
        xc = x - x.mean(1, keepdims=True)
        x = xc / jt.sqrt((xc * xc).mean(1, keepdims=True) + eps)
        return x * weight.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)
    forward, backward = _LN_HEADER + _LN_FORWARD, _LN_HEADER + _LN_BACKWARD
    pixels = (x.shape[0], x.shape[2] * x.shape[3])
    return _AffineNorm(eps, pixels, forward, backward)(x, weight, bias)[0]


# --- GELU (erf form) ---------------------------------------------------------------------------
_GELU_FORWARD = r"""
    typedef in0_type T;
    const size_t size = in0->num;
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < size; i++) {
        const T x = in0_p[i];
        out0_p[i] = T(0.5) * x * (T(1.0) + std::erf(x * T(0.70710678118654752)));
    }
"""
_GELU_BACKWARD = r"""
    typedef in0_type T;
    // in0: x, in1: dy; d/dx x * Phi(x) = Phi(x) + x * phi(x)
    const size_t size = in0->num;
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < size; i++) {
        const T x = in0_p[i];
        const T cdf = T(0.5) * (T(1.0) + std::erf(x * T(0.70710678118654752)));
        const T pdf = T(0.39894228040143268) * std::exp(-T(0.5) * x * x);
        out0_p[i] = in1_p[i] * (cdf + x * pdf);
    }
"""


class _GELU(jt.Function):
    def execute(self, x: jt.Var) -> jt.Var:
        self.saved = x
        return jittor_code(x.shape, x.dtype, [x], cpu_header=_INCLUDES, cpu_src=_GELU_FORWARD)

    def grad(self, grad_y: jt.Var) -> jt.Var:
        return jittor_code(
            self.saved.shape,
            self.saved.dtype,
            [self.saved, grad_y],
            cpu_header=_INCLUDES,
            cpu_src=_GELU_BACKWARD,
        )


def gelu(x: jt.Var) -> jt.Var:
    """GELU with the exact (erf) form, as ``torch.nn.GELU()``."""
    if not _kernels_take(x):
        return jt.nn.gelu(x)
    return _GELU()(x)


class GELU(jt.nn.Module):
    """``torch.nn.GELU()``: :func:`gelu` as a module."""

    def execute(self, x: jt.Var) -> jt.Var:
        return gelu(x)


# --- softmax over the last dim -----------------------------------------------------------------
_SOFTMAX_HEADER = r"""
    typedef in0_type T;
    const int L = in0->shape[in0->shape.size() - 1];
    const size_t rows = in0->num / L;
"""
_SOFTMAX_FORWARD = r"""
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        const in0_type* x = in0_p + r * L;
        out0_type* y = out0_p + r * L;
        T top = x[0];
        for (int i = 1; i < L; i++) top = x[i] > top ? x[i] : top;
        T total = 0;
        for (int i = 0; i < L; i++) { y[i] = std::exp(x[i] - top); total += y[i]; }
        const T inv = T(1.0) / total;
        for (int i = 0; i < L; i++) y[i] *= inv;
    }
"""
_SOFTMAX_BACKWARD = r"""
    // in0: y, in1: dy; dx = y * (dy - sum(dy * y))
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        const in0_type* y = in0_p + r * L;
        const in1_type* dy = in1_p + r * L;
        out0_type* dx = out0_p + r * L;
        T dot = 0;
        for (int i = 0; i < L; i++) dot += dy[i] * y[i];
        for (int i = 0; i < L; i++) dx[i] = y[i] * (dy[i] - dot);
    }
"""


class _Softmax(jt.Function):
    def execute(self, x: jt.Var) -> jt.Var:
        y = jittor_code(
            x.shape,
            x.dtype,
            [x],
            cpu_header=_INCLUDES,
            cpu_src=_SOFTMAX_HEADER + _SOFTMAX_FORWARD,
        )
        self.saved = y
        return y

    def grad(self, grad_y: jt.Var) -> jt.Var:
        y = self.saved
        source = _SOFTMAX_HEADER + _SOFTMAX_BACKWARD
        return jittor_code(y.shape, y.dtype, [y, grad_y], cpu_src=source)


def softmax_last(x: jt.Var) -> jt.Var:
    """Softmax over the last dim (``torch.softmax(x, dim=-1)``)."""
    if not _kernels_take(x):
        return jt.nn.softmax(x, dim=-1)
    return _Softmax()(x)


__all__ = ["GELU", "batch_norm_train", "gelu", "layer_norm_channels", "softmax_last"]
