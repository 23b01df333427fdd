"""Depthwise convolution (groups == in == out channels, stride 1) for Jittor on the CPU.

OverLoCK's large kernels are depthwise and run on small maps: 13x13 on 16x16, 9x9 on 4x4, 7x7
on 2x2 at 64x64 input, plus dilated 3x3..7x7 branches. Jittor hands them to oneDNN in NCHW,
where depthwise convolution (above all its weight gradient) has no fast path; these kernels
visit only the kernel taps that land inside the map (on a 4x4 map, 16 of a 9x9 kernel's 81)
and run over (image, channel) pairs with OpenMP. Jittor's ``nn.Conv2d`` calls a module's
``depthwise_conv`` when it has one (that is how Jittor plugs in its own CUDA depthwise kernel);
:func:`use_cpu_depthwise` attaches this one. Parameters and results are those of ``nn.Conv2d``
(same math; float rounding differs in the last bits).
"""

from __future__ import annotations

from utils.jittor_env import jt

# Shapes: x (N, C, H, W), weight (C, 1, KH, KW), y (N, C, OH, OW), OH = H + 2*PH - DH*(KH-1).
# Each loop writes a contiguous run of one row (vectorisable); the bounds keep taps in the map.
_HEADER = r"""
    const int N = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3;
    const int KH = in1_shape2, KW = in1_shape3;
    const int OH = H + 2 * PH - DH * (KH - 1), OW = W + 2 * PW - DW * (KW - 1);
    (void)N; (void)OH; (void)OW;
"""
_FORWARD = r"""
    #pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const in0_type* x = in0_p + ((size_t)n * C + c) * H * W;
            const in1_type* w = in1_p + (size_t)c * KH * KW;
            out0_type* y = out0_p + ((size_t)n * C + c) * OH * OW;
            for (int i = 0; i < OH * OW; i++) y[i] = 0;
            for (int oi = 0; oi < OH; oi++)
                for (int ki = 0; ki < KH; ki++) {
                    const int ii = oi - PH + ki * DH;
                    if (ii < 0 || ii >= H) continue;
                    for (int kj = 0; kj < KW; kj++) {
                        const int shift = kj * DW - PW;  // jj = oj + shift
                        const int lo = shift < 0 ? -shift : 0;
                        const int hi = OW < W - shift ? OW : W - shift;
                        const in1_type wk = w[ki * KW + kj];
                        const in0_type* xr = x + (size_t)ii * W + shift;
                        out0_type* yr = y + (size_t)oi * OW;
                        for (int oj = lo; oj < hi; oj++) yr[oj] += wk * xr[oj];
                    }
                }
        }
"""
_BACKWARD = r"""
    // in0: x, in1: weight, in2: dy; out0: dx, out1: dweight
    #pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const in2_type* g = in2_p + ((size_t)n * C + c) * OH * OW;
            const in1_type* w = in1_p + (size_t)c * KH * KW;
            out0_type* dx = out0_p + ((size_t)n * C + c) * H * W;
            for (int i = 0; i < H * W; i++) dx[i] = 0;
            for (int oi = 0; oi < OH; oi++)
                for (int ki = 0; ki < KH; ki++) {
                    const int ii = oi - PH + ki * DH;
                    if (ii < 0 || ii >= H) continue;
                    for (int kj = 0; kj < KW; kj++) {
                        const int shift = kj * DW - PW;
                        const int lo = shift < 0 ? -shift : 0;
                        const int hi = OW < W - shift ? OW : W - shift;
                        const in1_type wk = w[ki * KW + kj];
                        const in2_type* gr = g + (size_t)oi * OW;
                        out0_type* dr = dx + (size_t)ii * W + shift;
                        for (int oj = lo; oj < hi; oj++) dr[oj] += wk * gr[oj];
                    }
                }
        }
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < KH; ki++)
            for (int kj = 0; kj < KW; kj++) {
                const int shift = kj * DW - PW;
                const int lo = shift < 0 ? -shift : 0;
                const int hi = OW < W - shift ? OW : W - shift;
                out1_type sum = 0;
                for (int n = 0; n < N; n++) {
                    const in0_type* x = in0_p + ((size_t)n * C + c) * H * W;
                    const in2_type* g = in2_p + ((size_t)n * C + c) * OH * OW;
                    for (int oi = 0; oi < OH; oi++) {
                        const int ii = oi - PH + ki * DH;
                        if (ii < 0 || ii >= H) continue;
                        const in0_type* xr = x + (size_t)ii * W + shift;
                        const in2_type* gr = g + (size_t)oi * OW;
                        for (int oj = lo; oj < hi; oj++) sum += gr[oj] * xr[oj];
                    }
                }
                out1_p[((size_t)c * KH + ki) * KW + kj] = sum;
            }
"""


class CPUDepthwiseConv(jt.Function):
    """``y = conv2d(x, weight, stride=1, padding, dilation, groups=C)`` without bias."""

    def __init__(self, padding: tuple[int, int], dilation: tuple[int, int]) -> None:
        self.padding = (int(padding[0]), int(padding[1]))
        self.dilation = (int(dilation[0]), int(dilation[1]))
        (ph, pw), (dh, dw) = self.padding, self.dilation
        self.defines = f"#define PH {ph}\n#define PW {pw}\n#define DH {dh}\n#define DW {dw}\n"

    def execute(self, x: jt.Var, weight: jt.Var) -> jt.Var:
        self.saved = x, weight
        N, C, H, W = x.shape
        KH, KW = weight.shape[2], weight.shape[3]
        (ph, pw), (dh, dw) = self.padding, self.dilation
        shape = (N, C, H + 2 * ph - dh * (KH - 1), W + 2 * pw - dw * (KW - 1))
        if shape[2] < 1 or shape[3] < 1:
            raise ValueError(f"depthwise conv: output would be {shape} for input {x.shape}")
        return jt.code(
            shape, x.dtype, [x, weight], cpu_header=self.defines, cpu_src=_HEADER + _FORWARD
        )

    def grad(self, grad_y: jt.Var) -> tuple[jt.Var, jt.Var]:
        x, weight = self.saved
        d_x, d_weight = jt.code(
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
    if jt.flags.use_cuda:
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
