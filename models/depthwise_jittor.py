"""Depthwise convolution (groups == in == out channels, stride 1) for Jittor on the CPU.

OverLoCK's large kernels are depthwise and run on small maps: 13x13 on 16x16, 9x9 on 4x4, 7x7
on 2x2 at 64x64 input, plus dilated 3x3..7x7 branches. Jittor hands them to oneDNN in NCHW,
where depthwise convolution (above all its weight gradient) has no fast path. These kernels
visit only the kernel taps that land inside the map (on a 4x4 map, 16 of a 9x9 kernel's 81),
vectorise over channels (each image is transposed to H, W, C in a per-thread buffer) and run
over images with OpenMP. Jittor's ``nn.Conv2d`` calls a module's
``depthwise_conv`` when it has one (that is how Jittor plugs in its own CUDA depthwise kernel);
:func:`use_cpu_depthwise` attaches this one. Parameters and results are those of ``nn.Conv2d``
(same math; float rounding differs in the last bits).
"""

from __future__ import annotations

from core.jittor_env import code as jittor_code
from core.jittor_env import cuda_forms, jt

# Shapes: x (N, C, H, W), weight (C, 1, KH, KW), y (N, C, OH, OW), OH = H + 2*PH - DH*(KH-1).
# Each thread takes whole images and transposes them to (H, W, C) in its own buffers, so the
# innermost loop runs over channels: contiguous and the same length for every tap, where rows
# of a 4x4 or 2x2 map would give 1- to 4-long loops. Taps outside the map are skipped.
_HEADER = r"""
    typedef in0_type T;
    const int N = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3;
    const int KH = in1_shape2, KW = in1_shape3;
    const int OH = H + 2 * PH - DH * (KH - 1), OW = W + 2 * PW - DW * (KW - 1);
    const int HW = H * W, OHW = OH * OW, K = KH * KW;
    std::vector<T> wt((size_t)K * C);  // weight as (KH, KW, C)
    for (int c = 0; c < C; c++)
        for (int k = 0; k < K; k++) wt[(size_t)k * C + c] = in1_p[(size_t)c * K + k];
"""
_FORWARD = r"""
    #pragma omp parallel
    {
        std::vector<T> xt((size_t)HW * C), yt((size_t)OHW * C);
        #pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            const T* x = in0_p + (size_t)n * C * HW;
            for (int c = 0; c < C; c++)
                for (int i = 0; i < HW; i++) xt[(size_t)i * C + c] = x[(size_t)c * HW + i];
            std::fill(yt.begin(), yt.end(), T(0));
            for (int oi = 0; oi < OH; oi++)
                for (int ki = 0; ki < KH; ki++) {
                    const int ii = oi - PH + ki * DH;
                    if (ii < 0 || ii >= H) continue;
                    for (int oj = 0; oj < OW; oj++) {
                        T* yp = yt.data() + ((size_t)oi * OW + oj) * C;
                        for (int kj = 0; kj < KW; kj++) {
                            const int jj = oj - PW + kj * DW;
                            if (jj < 0 || jj >= W) continue;
                            const T* xp = xt.data() + ((size_t)ii * W + jj) * C;
                            const T* wp = wt.data() + ((size_t)ki * KW + kj) * C;
                            #pragma omp simd
                            for (int c = 0; c < C; c++) yp[c] += wp[c] * xp[c];
                        }
                    }
                }
            out0_type* y = out0_p + (size_t)n * C * OHW;
            for (int c = 0; c < C; c++)
                for (int i = 0; i < OHW; i++) y[(size_t)c * OHW + i] = yt[(size_t)i * C + c];
        }
    }
"""
_BACKWARD = r"""
    // in0: x, in1: weight, in2: dy; out0: dx, out1: dweight
    const int threads = omp_get_max_threads();
    std::vector<T> dwt((size_t)threads * K * C, T(0));  // per-thread (KH, KW, C) partial sums
    #pragma omp parallel
    {
        std::vector<T> xt((size_t)HW * C), gt((size_t)OHW * C), dxt((size_t)HW * C);
        T* dw = dwt.data() + (size_t)omp_get_thread_num() * K * C;
        #pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            const T* x = in0_p + (size_t)n * C * HW;
            const in2_type* g = in2_p + (size_t)n * C * OHW;
            for (int c = 0; c < C; c++) {
                for (int i = 0; i < HW; i++) xt[(size_t)i * C + c] = x[(size_t)c * HW + i];
                for (int i = 0; i < OHW; i++) gt[(size_t)i * C + c] = g[(size_t)c * OHW + i];
            }
            std::fill(dxt.begin(), dxt.end(), T(0));
            for (int oi = 0; oi < OH; oi++)
                for (int ki = 0; ki < KH; ki++) {
                    const int ii = oi - PH + ki * DH;
                    if (ii < 0 || ii >= H) continue;
                    for (int oj = 0; oj < OW; oj++) {
                        const T* gp = gt.data() + ((size_t)oi * OW + oj) * C;
                        for (int kj = 0; kj < KW; kj++) {
                            const int jj = oj - PW + kj * DW;
                            if (jj < 0 || jj >= W) continue;
                            const size_t at = ((size_t)ii * W + jj) * C;
                            const T* xp = xt.data() + at;
                            T* dxp = dxt.data() + at;
                            const T* wp = wt.data() + ((size_t)ki * KW + kj) * C;
                            T* dwp = dw + ((size_t)ki * KW + kj) * C;
                            #pragma omp simd
                            for (int c = 0; c < C; c++) {
                                dxp[c] += wp[c] * gp[c];
                                dwp[c] += gp[c] * xp[c];
                            }
                        }
                    }
                }
            out0_type* dx = out0_p + (size_t)n * C * HW;
            for (int c = 0; c < C; c++)
                for (int i = 0; i < HW; i++) dx[(size_t)c * HW + i] = dxt[(size_t)i * C + c];
        }
    }
    for (int c = 0; c < C; c++)
        for (int k = 0; k < K; k++) {
            T sum = 0;
            for (int t = 0; t < threads; t++) sum += dwt[((size_t)t * K + k) * C + c];
            out1_p[(size_t)c * K + k] = sum;
        }
"""
_INCLUDES = "#include <algorithm>\n#include <vector>\n#include <omp.h>\n"


class CPUDepthwiseConv(jt.Function):
    """``y = conv2d(x, weight, stride=1, padding, dilation, groups=C)`` without bias."""

    def __init__(self, padding: tuple[int, int], dilation: tuple[int, int]) -> None:
        self.padding = (int(padding[0]), int(padding[1]))
        self.dilation = (int(dilation[0]), int(dilation[1]))
        (ph, pw), (dh, dw) = self.padding, self.dilation
        defines = f"#define PH {ph}\n#define PW {pw}\n#define DH {dh}\n#define DW {dw}\n"
        self.defines = _INCLUDES + defines

    def execute(self, x: jt.Var, weight: jt.Var) -> jt.Var:
        self.saved = x, weight
        N, C, H, W = x.shape
        KH, KW = weight.shape[2], weight.shape[3]
        (ph, pw), (dh, dw) = self.padding, self.dilation
        shape = (N, C, H + 2 * ph - dh * (KH - 1), W + 2 * pw - dw * (KW - 1))
        if shape[2] < 1 or shape[3] < 1:
            raise ValueError(f"depthwise conv: output would be {shape} for input {x.shape}")
        return jittor_code(
            shape, x.dtype, [x, weight], cpu_header=self.defines, cpu_src=_HEADER + _FORWARD
        )

    def grad(self, grad_y: jt.Var) -> tuple[jt.Var, jt.Var]:
        x, weight = self.saved
        d_x, d_weight = jittor_code(
            [x.shape, weight.shape],
            [x.dtype, weight.dtype],
            [x, weight, grad_y],
            cpu_header=self.defines,
            cpu_src=_HEADER + _BACKWARD,
        )
        return d_x, d_weight


def use_cpu_depthwise(model: jt.nn.Module) -> int:
    """Give every stride-1 depthwise ``nn.Conv2d`` of ``model`` the CPU kernels (no-op on CUDA,
    where Jittor has its own). Returns how many convolutions got them.
    """
    if cuda_forms():
        return 0
    count = 0
    for module in model.modules():
        if (
            isinstance(module, jt.nn.Conv2d)
            and module.is_depthwise_conv
            and tuple(module.stride) == (1, 1)
        ):
            module.depthwise_conv = CPUDepthwiseConv(module.padding, module.dilation)
            count += 1
    return count


__all__ = ["CPUDepthwiseConv", "use_cpu_depthwise"]
