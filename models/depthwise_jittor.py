"""Depthwise convolution (groups == in == out channels, stride 1) for Jittor on the CPU.

OverLoCK's large kernels are depthwise and run on small maps: 13x13 on 16x16, 9x9 on 4x4, 7x7
on 2x2 at 64x64 input, plus dilated 3x3..7x7 branches. Jittor hands them to oneDNN in NCHW,
where depthwise convolution (above all its weight gradient) has no fast path. These kernels
visit only the kernel taps that land inside the map (on a 4x4 map, 16 of a 9x9 kernel's 81),
vectorise over channels (each image is transposed to H, W, C in a per-thread buffer), sum each
output over its taps in registers and run over images with OpenMP. Jittor's ``nn.Conv2d`` calls
a module's ``depthwise_conv`` when it has one (that is how Jittor plugs in its own CUDA
depthwise kernel); :func:`use_cpu_depthwise` attaches this one. Parameters and results are
those of ``nn.Conv2d`` (same math; float rounding differs in the last bits).
"""

from __future__ import annotations

from core.jittor_env import code as jittor_code
from core.jittor_env import cuda_forms, jt

# Shapes: x (N, C, H, W), weight (C, 1, KH, KW), y (N, C, OH, OW), OH = H + 2*PH - DH*(KH-1).
# Each thread takes whole images and transposes them to (H, W, CP) in its own buffers, CP = C
# rounded up to whole 8-lane vectors (the padding stays zero), so the innermost loop runs over
# channels: contiguous and the same length for every tap, where rows of a 4x4 or 2x2 map would
# give 1- to 4-long loops. Each output (or gradient) element of a block of up to 64 channels is
# summed in registers over its taps, in the order of the taps; taps outside the map are skipped.
_HEADER = r"""
    typedef in0_type T;
    typedef T lanes __attribute__((vector_size(8 * sizeof(T))));
    const int N = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3;
    const int KH = in1_shape2, KW = in1_shape3;
    const int OH = H + 2 * PH - DH * (KH - 1), OW = W + 2 * PW - DW * (KW - 1);
    const int HW = H * W, OHW = OH * OW, K = KH * KW, CP = (C + 7) / 8 * 8;
    std::vector<T> wt((size_t)K * CP, T(0));  // weight as (KH, KW, CP)
    for (int c = 0; c < C; c++)
        for (int k = 0; k < K; k++) wt[(size_t)k * CP + c] = in1_p[(size_t)c * K + k];
    auto load = [](const T* p) { lanes v; std::memcpy(&v, p, sizeof v); return v; };
    auto store = [](T* p, const lanes& v) { std::memcpy(p, &v, sizeof v); };
    // f(width, c0) for blocks of `width` vectors from channel c0 on, covering all CP channels
    auto for_channel_blocks = [CP](auto f) {
        int c0 = 0;
        for (; c0 + 64 <= CP; c0 += 64) f(std::integral_constant<int, 8>(), c0);
        for (; c0 + 32 <= CP; c0 += 32) f(std::integral_constant<int, 4>(), c0);
        if (CP - c0 == 24) f(std::integral_constant<int, 3>(), c0);
        if (CP - c0 == 16) f(std::integral_constant<int, 2>(), c0);
        if (CP - c0 == 8) f(std::integral_constant<int, 1>(), c0);
    };
    // the taps k < KN with 0 <= base + k * D < n, as [first, last]: a tap loop without tests
    auto taps = [](int base, int D, int KN, int n, int& first, int& last) {
        auto floor_div = [](int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); };
        first = std::max(0, -floor_div(base, D));
        last = std::min(KN - 1, floor_div(n - 1 - base, D));
    };
    // one image: (C, n) planes <-> (n, CP) rows
    auto to_rows = [C, CP](const T* planes, int n, T* rows) {
        for (int c = 0; c < C; c++)
            for (int i = 0; i < n; i++) rows[(size_t)i * CP + c] = planes[(size_t)c * n + i];
    };
    auto to_planes = [C, CP](const T* rows, int n, T* planes) {
        for (int c = 0; c < C; c++)
            for (int i = 0; i < n; i++) planes[(size_t)c * n + i] = rows[(size_t)i * CP + c];
    };
"""
_FORWARD = r"""
    #pragma omp parallel
    {
        std::vector<T> xt((size_t)HW * CP, T(0)), yt((size_t)OHW * CP);
        #pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            to_rows(in0_p + (size_t)n * C * HW, HW, xt.data());
            for_channel_blocks([&](auto width, int c0) {
                constexpr int NV = decltype(width)::value;
                for (int oi = 0; oi < OH; oi++) {
                    int ki0, ki1;
                    taps(oi - PH, DH, KH, H, ki0, ki1);
                    for (int oj = 0; oj < OW; oj++) {
                        lanes acc[NV] = {};
                        int kj0, kj1;
                        taps(oj - PW, DW, KW, W, kj0, kj1);
                        for (int ki = ki0; ki <= ki1; ki++) {
                            const int ii = oi - PH + ki * DH;
                            for (int kj = kj0; kj <= kj1; kj++) {
                                const int jj = oj - PW + kj * DW;
                                const T* xp = xt.data() + ((size_t)ii * W + jj) * CP + c0;
                                const T* wp = wt.data() + ((size_t)ki * KW + kj) * CP + c0;
                                for (int v = 0; v < NV; v++)
                                    acc[v] += load(wp + 8 * v) * load(xp + 8 * v);
                            }
                        }
                        T* yp = yt.data() + ((size_t)oi * OW + oj) * CP + c0;
                        for (int v = 0; v < NV; v++) store(yp + 8 * v, acc[v]);
                    }
                }
            });
            to_planes(yt.data(), OHW, out0_p + (size_t)n * C * OHW);
        }
    }
"""
# dx is summed as a gather over the taps from the last one back, which adds the terms in the
# order of the outputs they come from; dweight per tap over the outputs in order, into one
# partial sum per thread.
_BACKWARD = r"""
    // in0: x, in1: weight, in2: dy; out0: dx, out1: dweight
    const int threads = omp_get_max_threads();
    std::vector<T> dwt((size_t)threads * K * CP, T(0));  // per-thread (KH, KW, CP) partial sums
    #pragma omp parallel
    {
        std::vector<T> xt((size_t)HW * CP, T(0)), gt((size_t)OHW * CP, T(0));
        std::vector<T> dxt((size_t)HW * CP);
        T* dw = dwt.data() + (size_t)omp_get_thread_num() * K * CP;
        #pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            to_rows(in0_p + (size_t)n * C * HW, HW, xt.data());
            to_rows(in2_p + (size_t)n * C * OHW, OHW, gt.data());
            for_channel_blocks([&](auto width, int c0) {
                constexpr int NV = decltype(width)::value;
                for (int ii = 0; ii < H; ii++) {
                    // oi = ii + PH - ki * DH inside the output: OH - 1 - oi in [0, OH)
                    int ki0, ki1;
                    taps(OH - 1 - ii - PH, DH, KH, OH, ki0, ki1);
                    for (int jj = 0; jj < W; jj++) {
                        lanes acc[NV] = {};
                        int kj0, kj1;
                        taps(OW - 1 - jj - PW, DW, KW, OW, kj0, kj1);
                        for (int ki = ki1; ki >= ki0; ki--) {
                            const int oi = ii + PH - ki * DH;
                            for (int kj = kj1; kj >= kj0; kj--) {
                                const int oj = jj + PW - kj * DW;
                                const T* gp = gt.data() + ((size_t)oi * OW + oj) * CP + c0;
                                const T* wp = wt.data() + ((size_t)ki * KW + kj) * CP + c0;
                                for (int v = 0; v < NV; v++)
                                    acc[v] += load(wp + 8 * v) * load(gp + 8 * v);
                            }
                        }
                        T* dxp = dxt.data() + ((size_t)ii * W + jj) * CP + c0;
                        for (int v = 0; v < NV; v++) store(dxp + 8 * v, acc[v]);
                    }
                }
                for (int ki = 0; ki < KH; ki++)
                    for (int kj = 0; kj < KW; kj++) {
                        T* dwp = dw + ((size_t)ki * KW + kj) * CP + c0;
                        lanes acc[NV];
                        for (int v = 0; v < NV; v++) acc[v] = load(dwp + 8 * v);
                        // outputs whose input ii = oi - PH + ki * DH is inside the map
                        const int oi0 = std::max(0, PH - ki * DH);
                        const int oi1 = std::min(OH, H + PH - ki * DH);
                        const int oj0 = std::max(0, PW - kj * DW);
                        const int oj1 = std::min(OW, W + PW - kj * DW);
                        for (int oi = oi0; oi < oi1; oi++) {
                            const int ii = oi - PH + ki * DH;
                            for (int oj = oj0; oj < oj1; oj++) {
                                const int jj = oj - PW + kj * DW;
                                const T* gp = gt.data() + ((size_t)oi * OW + oj) * CP + c0;
                                const T* xp = xt.data() + ((size_t)ii * W + jj) * CP + c0;
                                for (int v = 0; v < NV; v++)
                                    acc[v] += load(gp + 8 * v) * load(xp + 8 * v);
                            }
                        }
                        for (int v = 0; v < NV; v++) store(dwp + 8 * v, acc[v]);
                    }
            });
            to_planes(dxt.data(), HW, out0_p + (size_t)n * C * HW);
        }
    }
    for (int c = 0; c < C; c++)
        for (int k = 0; k < K; k++) {
            T sum = 0;
            for (int t = 0; t < threads; t++) sum += dwt[((size_t)t * K + k) * CP + c];
            out1_p[(size_t)c * K + k] = sum;
        }
"""
_INCLUDES = (
    "#include <algorithm>\n#include <cstring>\n#include <type_traits>\n#include <vector>\n"
    "#include <omp.h>\n"
)


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
