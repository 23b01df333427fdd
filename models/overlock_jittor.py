"""OverLoCK in Jittor: the twin of ``models/overlock_torch.py``, same network and names.

OverLoCK: An Overview-first-Look-Closely-next ConvNet with Context-Mixing Dynamic Kernels
(Lou & Yu, CVPR 2025, https://arxiv.org/abs/2502.20087). Module, parameter and buffer names follow
the official PyTorch model, so its checkpoints load with no missing or unexpected keys.

Where Jittor's built-ins do not compute what PyTorch computes, this file has its own small
version with PyTorch's semantics (each says why): BatchNorm2d, LayerNorm2d, AdaptiveAvgPool2d /
adaptive_avg_pool2d, interpolate (bilinear) and DropPath. On the CPU, BatchNorm, LayerNorm, GELU
and softmax run as the multi-threaded kernels of ``models/fused_jittor.py`` (Jittor's generated
CPU loops are single-threaded), depthwise convolutions as those of ``models/depthwise_jittor.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from core.jittor_env import jt  # configures Jittor before its first import

from .depthwise_jittor import use_cpu_depthwise
from .fused_jittor import GELU, batch_norm_train, layer_norm_channels, softmax_last
from .matmul_jittor import matmul_tn
from .na2d_jittor import na2d_av

nn = jt.nn

__all__ = ["OverLoCK"]


# ---------------------------------------------------------------------------------------------
# PyTorch-semantics replacements for Jittor built-ins
# ---------------------------------------------------------------------------------------------


class BatchNorm2d(nn.Module):
    """BatchNorm with ``torch.nn.BatchNorm2d``'s semantics and buffer names.

    Jittor's BatchNorm differs: its running_var tracks the biased batch variance (torch: unbiased),
    it has no ``num_batches_tracked`` buffer (torch checkpoints carry one), it computes the
    variance as E[x^2] - E[x]^2 (cancellation; torch centres first), and under MPI it always
    averages the statistics over processes (torch's BatchNorm2d never does; see SyncBatchNorm).
    """

    sync = False  # SyncBatchNorm: statistics over the global batch of all MPI processes

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.weight = jt.ones(num_features)
        self.bias = jt.zeros(num_features)
        self.running_mean = jt.zeros(num_features).stop_grad()
        self.running_var = jt.ones(num_features).stop_grad()
        # torch's is a 0-d int64; Jittor has no 0-d Vars, so it is shape (1,).
        self.num_batches_tracked = jt.zeros((1,), dtype="int64").stop_grad()

    def execute(self, x: jt.Var) -> jt.Var:
        if not self.is_training():
            return self._normalize(x, self.running_mean, self.running_var)
        if self.sync and jt.in_mpi:
            # Sums, not means, are all-reduced: exact for shards of any size (and the gradient
            # of Jittor's "add" all-reduce is right; that of its "mean" is not).
            dims = [0, 2, 3]
            count = jt.array([float(x.numel() // x.shape[1])])
            total = jt.concat([x.sum(dims=dims), count]).mpi_all_reduce("add")
            count = total[-1]
            mean = total[:-1] / count
            xc = x - mean.reshape(1, -1, 1, 1)
            var = (xc * xc).sum(dims=dims).mpi_all_reduce("add") / count
            y = self._normalize(x, mean, var)
            mean, var = mean.detach(), var.detach() * (count / (count - 1).maximum(1)).detach()
        else:
            count = x.numel() // x.shape[1]
            y, mean, var = batch_norm_train(x, self.weight, self.bias, self.eps)
            var = var * (count / max(count - 1, 1))
        m = self.momentum  # running statistics keep the unbiased variance, as torch's
        self.running_mean.update((1 - m) * self.running_mean + m * mean)
        self.running_var.update((1 - m) * self.running_var + m * var)
        self.num_batches_tracked.update(self.num_batches_tracked + 1)
        return y

    def _normalize(self, x: jt.Var, mean: jt.Var, var: jt.Var) -> jt.Var:
        scale = self.weight / jt.sqrt(var + self.eps)
        xc = x - mean.reshape(1, -1, 1, 1)
        return xc * scale.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)


class SyncBatchNorm(BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of all MPI processes
    (``torch.nn.SyncBatchNorm``'s role; the same module as BatchNorm2d in one process).
    """

    sync = True


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Make every BatchNorm2d below ``module`` a SyncBatchNorm, keeping its state."""
    for child in module.modules():
        if type(child) is BatchNorm2d:
            # Same state, only the class attribute ``sync`` differs, so the class is swapped in
            # place (Jittor's Sequential keeps children in a dict that setattr does not reach).
            child.__class__ = SyncBatchNorm
    return module


# (in_size, out_size) -> the (out, in) matrix of a 1-D linear map
LineMatrix = Callable[[int, int], np.ndarray]


@functools.lru_cache(maxsize=64)
def _adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) averaging matrix with torch's adaptive-pool bins [floor(i*I/O), ceil((i+1)*I/O)).

    Jittor's AdaptiveAvgPool2d uses equal, uniformly strided windows instead, which differs
    whenever I/O is not an integer (e.g. 9 -> 7 or 9 -> 4).
    """
    mat = np.zeros((out_size, in_size), dtype=np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        mat[i, start:end] = 1.0 / (end - start)
    return mat


def adaptive_avg_pool2d(x: jt.Var, output_size: int | Sequence[int]) -> jt.Var:
    """``torch.nn.functional.adaptive_avg_pool2d`` (NCHW)."""
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    if out_h == 1 and out_w == 1:
        return x.mean(dims=[2, 3], keepdims=True)
    return _separable_map(x, _adaptive_pool_matrix, (out_h, out_w))


class AdaptiveAvgPool2d(nn.Module):
    """``torch.nn.AdaptiveAvgPool2d`` (see ``adaptive_avg_pool2d``)."""

    def __init__(self, output_size: int | Sequence[int]):
        self.output_size = output_size

    def execute(self, x: jt.Var) -> jt.Var:
        return adaptive_avg_pool2d(x, self.output_size)


@functools.lru_cache(maxsize=64)
def _bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) 1-D linear interpolation matrix of torch's bilinear, align_corners=False.

    torch: src = max((dst + 0.5) * in/out - 0.5, 0), neighbours floor(src) and floor(src) + 1
    clamped to the last pixel, computed in float32. Jittor's resize clamps the source coordinate
    only when upsampling and computes it as dst*s + (s/2 - 0.5), so it rounds differently.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    mat = np.zeros((out_size, in_size), dtype=np.float32)
    for i in range(out_size):
        src = max(scale * np.float32(i + 0.5) - np.float32(0.5), np.float32(0))
        i0 = int(src)
        i1 = i0 + 1 if i0 < in_size - 1 else i0
        w1 = src - np.float32(i0)
        mat[i, i0] += np.float32(1) - w1
        mat[i, i1] += w1
    return mat


def interpolate(x: jt.Var, size: Sequence[int]) -> jt.Var:
    """``F.interpolate(x, size, mode='bilinear', align_corners=False)`` (NCHW), separably."""
    return _separable_map(x, _bilinear_matrix, tuple(size))


_PLANE_MATRIX_MAX = 1 << 20  # entries of the (H*W, OH*OW) matrix (4 MiB in float32)


@functools.lru_cache(maxsize=64)
def _plane_matrix(
    matrix_fn: LineMatrix, in_size: tuple[int, int], out_size: tuple[int, int]
) -> np.ndarray:
    """(H*W, OH*OW) matrix applying ``matrix_fn``'s row and column maps to a flattened plane.

    Entries are the products of the two float32 1-D weights, taken in float64 and rounded once.
    """
    rows = matrix_fn(in_size[0], out_size[0]).astype(np.float64)
    cols = matrix_fn(in_size[1], out_size[1]).astype(np.float64)
    return np.ascontiguousarray(np.kron(rows, cols).T, dtype=np.float32)


def _separable_map(x: jt.Var, matrix_fn: LineMatrix, size: tuple[int, int]) -> jt.Var:
    """Apply a separable linear map (rows, then columns) to every plane of x (N, C, H, W).

    Small planes take one 2-D matmul with the (H*W, OH*OW) matrix: one oneDNN call, where the
    batched ``rows @ x @ cols.T`` is a single-threaded broadcast-reduce on the CPU. Large planes
    (that matrix over ``_PLANE_MATRIX_MAX`` entries) take the two small matrices.
    """
    N, C, H, W = x.shape
    if H * W * size[0] * size[1] <= _PLANE_MATRIX_MAX:
        matrix = jt.array(_plane_matrix(matrix_fn, (H, W), size))
        return (x.reshape(N * C, H * W) @ matrix).reshape(N, C, size[0], size[1])
    rows, cols = jt.array(matrix_fn(H, size[0])), jt.array(matrix_fn(W, size[1]))
    return rows @ x @ cols.transpose(1, 0)


class DropPath(nn.Module):
    """Stochastic depth per sample, as timm's DropPath (scale by keep probability).

    Jittor's own DropPath starts with ``is_train=False`` and so does nothing unless ``train()`` was
    called; this one follows the module's training state like torch.
    """

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def execute(self, x: jt.Var) -> jt.Var:
        if self.drop_prob == 0.0 or not self.is_training():
            return x
        keep_prob = 1 - self.drop_prob
        mask = (jt.rand((x.shape[0],) + (1,) * (x.ndim - 1)) < keep_prob).float32()
        if keep_prob > 0.0 and self.scale_by_keep:
            mask = mask / keep_prob
        return x * mask


# ---------------------------------------------------------------------------------------------
# OverLoCK
# ---------------------------------------------------------------------------------------------


def get_conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
    bias: bool,
    attempt_use_lk_impl: bool = True,
) -> nn.Module:
    """Conv2d. (The PyTorch twin may pick UniRepLKNet's iGEMM large-kernel conv, a CUDA speed-up
    with identical math that exists only for PyTorch; Jittor always uses its own conv.)"""
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias,
    )


def get_bn(dim: int, use_sync_bn: bool = False) -> nn.Module:
    return SyncBatchNorm(dim) if use_sync_bn else BatchNorm2d(dim)


def fuse_bn(conv: nn.Conv2d, bn: BatchNorm2d) -> tuple[jt.Var, jt.Var]:
    """Fold an eval-mode BatchNorm into the preceding conv: returns (kernel, bias)."""
    conv_bias = 0 if conv.bias is None else conv.bias
    std = (bn.running_var + bn.eps).sqrt()
    kernel = conv.weight * (bn.weight / std).reshape(-1, 1, 1, 1)
    return kernel, bn.bias + (conv_bias - bn.running_mean) * bn.weight / std


def convert_dilated_to_nondilated(kernel: jt.Var, dilate_rate: int) -> jt.Var:
    """Dense kernel equal to a dilated one: insert ``dilate_rate - 1`` zeros between taps.

    (The official code does this with a stride-r transposed conv of a 1x1 identity kernel;
    plain strided indexing is the same thing.)
    """
    out_c, in_c, k_h, k_w = kernel.shape
    dense = jt.zeros(
        (out_c, in_c, dilate_rate * (k_h - 1) + 1, dilate_rate * (k_w - 1) + 1), dtype=kernel.dtype
    )
    dense[:, :, ::dilate_rate, ::dilate_rate] = kernel
    return dense


def merge_dilated_into_large_kernel(
    large_kernel: jt.Var, dilated_kernel: jt.Var, dilated_r: int
) -> jt.Var:
    """Add a dilated kernel into a larger dense kernel, both centred."""
    equivalent_kernel = convert_dilated_to_nondilated(dilated_kernel, dilated_r)
    pad = large_kernel.shape[2] // 2 - equivalent_kernel.shape[2] // 2
    return large_kernel + nn.pad(equivalent_kernel, [pad] * 4)


@functools.lru_cache(maxsize=64)
def rpb_index(height: int, width: int, kernel_size: int) -> np.ndarray:
    """Index into a flattened (2K-1, 2K-1) relative-position-bias table, shape (H*W, K*K).

    Neighbourhood attention (NATTEN, dilation 1) gives query i the window starting at
    s_i = clamp(i - K//2, 0, L - K); its neighbour k sits at s_i + k, so the relative offset is
    s_i + k - i and its bias-table row is s_i + k - i + K - 1. Equals the official ``apply_rpb``
    (checked against it in tests/test_models.py).
    """

    def axis(length: int) -> np.ndarray:  # (L, K) table rows along one axis
        pos = np.arange(length)
        start = np.clip(pos - kernel_size // 2, 0, length - kernel_size)
        return start[:, None] + np.arange(kernel_size)[None, :] - pos[:, None] + kernel_size - 1

    size = 2 * kernel_size - 1
    rows, cols = axis(height), axis(width)
    idx = rows[:, None, :, None] * size + cols[None, :, None, :]  # (H, W, K, K)
    return idx.reshape(height * width, kernel_size * kernel_size)


def stem(in_chans: int = 3, embed_dim: int = 96) -> nn.Sequential:
    """Four 3x3 convs, two of them stride 2: the 4x patch embedding."""
    return nn.Sequential(
        nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1, bias=False),
        BatchNorm2d(embed_dim // 2),
        GELU(),
        nn.Conv2d(embed_dim // 2, embed_dim // 2, kernel_size=3, padding=1, bias=False),
        BatchNorm2d(embed_dim // 2),
        GELU(),
        nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1, bias=False),
        BatchNorm2d(embed_dim),
        GELU(),
        nn.Conv2d(embed_dim, embed_dim, kernel_size=3, padding=1, bias=False),
        BatchNorm2d(embed_dim),
    )


def downsample(in_dim: int, out_dim: int) -> nn.Sequential:
    """Stride-2 3x3 conv + BN between stages."""
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=2, padding=1, bias=False),
        BatchNorm2d(out_dim),
    )


class SEModule(nn.Module):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018) with a GELU bottleneck."""

    def __init__(self, dim: int, red: int = 8, inner_act=GELU, out_act=nn.Sigmoid):
        super().__init__()
        inner_dim = max(16, dim // red)
        self.proj = nn.Sequential(
            AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, inner_dim, kernel_size=1),
            inner_act(),
            nn.Conv2d(inner_dim, dim, kernel_size=1),
            out_act(),
        )

    def execute(self, x: jt.Var) -> jt.Var:
        return x * self.proj(x)


class LayerScale(nn.Module):
    """Per-channel affine ``x * weight + bias``.

    The official code runs it as a depthwise 1x1 conv, hence the (dim, 1, 1, 1) weight; the
    elementwise form is the same math.
    """

    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.weight = jt.ones((dim, 1, 1, 1)) * init_value
        self.bias = jt.zeros(dim)

    def execute(self, x: jt.Var) -> jt.Var:
        return x * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW map (eps 1e-6).

    Own version because Jittor's LayerNorm computes the variance as E[x^2] - E[x]^2, which loses
    precision when the mean is large; torch centres first. Normalising over dim 1 directly is the
    same as torch's permute -> LayerNorm -> permute.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.normalized_shape = (dim,)
        self.eps = 1e-6
        self.weight = jt.ones(dim)
        self.bias = jt.zeros(dim)

    def execute(self, x: jt.Var) -> jt.Var:
        return layer_norm_channels(x, self.weight, self.bias, self.eps)


class GRN(nn.Module):
    """Global Response Normalization from ConvNeXt V2 (https://arxiv.org/abs/2301.00808), NCHW."""

    def __init__(self, dim: int, use_bias: bool = True):
        super().__init__()
        self.use_bias = use_bias
        self.gamma = jt.zeros((1, dim, 1, 1))
        if self.use_bias:
            self.beta = jt.zeros((1, dim, 1, 1))

    def execute(self, x: jt.Var) -> jt.Var:
        Gx = (x * x).sum(dims=[2, 3], keepdims=True).sqrt()
        Nx = Gx / (Gx.mean(1, keepdims=True) + 1e-6)
        if self.use_bias:
            return (self.gamma * Nx + 1) * x + self.beta
        return (self.gamma * Nx + 1) * x


# Small dilated branches added to a depthwise K x K kernel (UniRepLKNet defaults):
# kernel_size -> (branch kernel sizes, branch dilations).
_DILATED_BRANCHES = {
    19: ([5, 7, 9, 9, 3, 3, 3], [1, 1, 1, 2, 4, 5, 7]),
    17: ([5, 7, 9, 3, 3, 3], [1, 1, 2, 4, 5, 7]),
    15: ([5, 7, 7, 3, 3, 3], [1, 1, 2, 3, 5, 7]),
    13: ([5, 7, 7, 3, 3, 3], [1, 1, 2, 3, 4, 5]),
    11: ([5, 7, 5, 3, 3, 3], [1, 1, 2, 3, 4, 5]),
    9: ([5, 7, 5, 3, 3], [1, 1, 2, 3, 4]),
    7: ([5, 3, 3, 3], [1, 1, 2, 3]),
    5: ([3, 3], [1, 2]),
}


class DilatedReparamBlock(nn.Module):
    """Dilated Reparam Block from UniRepLKNet (Ding et al., CVPR 2024, arXiv:2311.15599).

    A depthwise K x K conv + BN plus parallel small dilated depthwise conv + BN branches; after
    training, ``merge_dilated_branches`` folds all of them into one K x K conv with bias.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        deploy: bool,
        use_sync_bn: bool = False,
        attempt_use_lk_impl: bool = True,
    ):
        super().__init__()
        self.lk_origin = get_conv2d(
            channels,
            channels,
            kernel_size,
            stride=1,
            padding=kernel_size // 2,
            dilation=1,
            groups=channels,
            bias=deploy,
            attempt_use_lk_impl=attempt_use_lk_impl,
        )
        self.attempt_use_lk_impl = attempt_use_lk_impl
        if kernel_size not in _DILATED_BRANCHES:
            raise ValueError(f"DilatedReparamBlock has no branch setting for kernel {kernel_size}")
        self.kernel_sizes, self.dilates = _DILATED_BRANCHES[kernel_size]

        if not deploy:
            self.origin_bn = get_bn(channels, use_sync_bn)
            for k, r in zip(self.kernel_sizes, self.dilates, strict=True):
                conv = nn.Conv2d(
                    channels,
                    channels,
                    kernel_size=k,
                    stride=1,
                    padding=(r * (k - 1) + 1) // 2,
                    dilation=r,
                    groups=channels,
                    bias=False,
                )
                setattr(self, f"dil_conv_k{k}_{r}", conv)
                setattr(self, f"dil_bn_k{k}_{r}", get_bn(channels, use_sync_bn))

    def execute(self, x: jt.Var) -> jt.Var:
        if not hasattr(self, "origin_bn"):  # deploy (merged) form
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for k, r in zip(self.kernel_sizes, self.dilates, strict=True):
            conv = getattr(self, f"dil_conv_k{k}_{r}")
            bn = getattr(self, f"dil_bn_k{k}_{r}")
            out = out + bn(conv(x))
        return out

    def merge_dilated_branches(self) -> None:
        """Fold every branch and BN into ``lk_origin`` (uses BN running statistics)."""
        if not hasattr(self, "origin_bn"):
            return
        with jt.no_grad():
            origin_k, origin_b = fuse_bn(self.lk_origin, self.origin_bn)
            for k, r in zip(self.kernel_sizes, self.dilates, strict=True):
                branch_k, branch_b = fuse_bn(
                    getattr(self, f"dil_conv_k{k}_{r}"), getattr(self, f"dil_bn_k{k}_{r}")
                )
                origin_k = merge_dilated_into_large_kernel(origin_k, branch_k, r)
                origin_b = origin_b + branch_b
        channels, size = origin_k.shape[0], origin_k.shape[2]
        merged_conv = get_conv2d(
            channels,
            channels,
            size,
            stride=1,
            padding=size // 2,
            dilation=1,
            groups=channels,
            bias=True,
            attempt_use_lk_impl=self.attempt_use_lk_impl,
        )
        # Fresh trainable leaves, cut from the graph of the fused values.
        merged_conv.weight = jt.array(origin_k.numpy())
        merged_conv.bias = jt.array(origin_b.numpy())
        self.lk_origin = merged_conv
        del self.origin_bn
        for k, r in zip(self.kernel_sizes, self.dilates, strict=True):
            delattr(self, f"dil_conv_k{k}_{r}")
            delattr(self, f"dil_bn_k{k}_{r}")


class CTXDownsample(nn.Module):
    """Stride-2 downsampling of the stage-3 features and of the context between sub-stages."""

    def __init__(self, dim: int, h_dim: int):
        super().__init__()
        self.x_proj = nn.Sequential(
            nn.Conv2d(dim, h_dim, kernel_size=3, stride=2, padding=1, bias=False),
            BatchNorm2d(h_dim),
        )
        self.h_proj = nn.Sequential(
            nn.Conv2d(h_dim // 4, h_dim // 4, kernel_size=3, stride=2, padding=1, bias=False),
            BatchNorm2d(h_dim // 4),
        )

    def execute(self, x: jt.Var, ctx: jt.Var) -> tuple[jt.Var, jt.Var]:
        return self.x_proj(x), self.h_proj(ctx)


class ResDWConv(nn.Conv2d):
    """Depthwise conv with a residual connection: ``x + dwconv(x)``."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)

    def execute(self, x: jt.Var) -> jt.Var:
        return x + super().execute(x)


def _no_checkpoint(use_checkpoint: bool) -> None:
    if use_checkpoint:
        raise NotImplementedError(
            "use_checkpoint: Jittor 1.3.11 has no activation recomputation "
            "(torch.utils.checkpoint); build the Jittor model with use_checkpoint=[0, 0, 0, 0]"
        )


class RepConvBlock(nn.Module):
    """OverLoCK's Base-Net / Overview-Net block: large-kernel reparam conv + SE + GRN-MLP."""

    def __init__(
        self,
        dim: int = 64,
        kernel_size: int = 7,
        mlp_ratio: float = 4,
        ls_init_value: float | None = None,
        res_scale: bool = False,
        drop_path: float = 0,
        norm_layer=LayerNorm2d,
        use_gemm: bool = False,
        deploy: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        _no_checkpoint(use_checkpoint)
        self.res_scale = res_scale
        self.use_checkpoint = use_checkpoint
        mlp_dim = int(dim * mlp_ratio)

        self.dwconv = ResDWConv(dim, kernel_size=3)
        self.proj = nn.Sequential(
            norm_layer(dim),
            DilatedReparamBlock(
                dim, kernel_size=kernel_size, deploy=deploy, attempt_use_lk_impl=use_gemm
            ),
            BatchNorm2d(dim),
            SEModule(dim),
            nn.Conv2d(dim, mlp_dim, kernel_size=1),
            GELU(),
            ResDWConv(mlp_dim, kernel_size=3),
            GRN(mlp_dim),
            nn.Conv2d(mlp_dim, dim, kernel_size=1),
            DropPath(drop_path) if drop_path > 0 else nn.Identity(),
        )
        self.ls = (
            LayerScale(dim, init_value=ls_init_value)
            if ls_init_value is not None
            else nn.Identity()
        )

    def forward_features(self, x: jt.Var) -> jt.Var:
        x = self.dwconv(x)
        if self.res_scale:
            return self.ls(x) + self.proj(x)
        drop_path = self.proj[-1]
        y = x
        for layer in list(self.proj)[:-1]:  # Jittor's Sequential slices to a plain list
            y = layer(y)
        return x + drop_path(self.ls(y))

    def execute(self, x: jt.Var) -> jt.Var:
        return self.forward_features(x)


class DynamicConvBlock(nn.Module):
    """OverLoCK's Focus-Net block with ContMix (context-mixing dynamic convolution).

    Each position's dynamic kernels come from the affinity between its query and 7x7 pooled
    regions of the top-down context; they are applied as neighbourhood attention (na2d_av) with
    a large (K) and a small (smk_size) window, plus relative position biases.
    """

    def __init__(
        self,
        dim: int = 64,
        ctx_dim: int = 32,
        kernel_size: int = 7,
        smk_size: int = 5,
        num_heads: int = 2,
        mlp_ratio: float = 4,
        ls_init_value: float | None = None,
        res_scale: bool = False,
        drop_path: float = 0,
        norm_layer=LayerNorm2d,
        is_first: bool = False,
        is_last: bool = False,
        use_gemm: bool = False,
        deploy: bool = False,
        use_checkpoint: bool = False,
        **kwargs: Any,  # the official code passes pool_size=7 and ignores it
    ):
        super().__init__()
        _no_checkpoint(use_checkpoint)
        ctx_dim = ctx_dim // 4
        out_dim = dim + ctx_dim
        mlp_dim = int(dim * mlp_ratio)
        self.kernel_size = kernel_size
        self.res_scale = res_scale
        self.use_gemm = use_gemm
        self.smk_size = smk_size
        self.num_heads = num_heads * 2  # half of the heads per window size
        head_dim = dim // self.num_heads
        self.scale = head_dim**-0.5
        self.is_first = is_first
        self.is_last = is_last
        self.use_checkpoint = use_checkpoint

        if not is_first:
            self.x_scale = LayerScale(ctx_dim, init_value=1)
            self.h_scale = LayerScale(ctx_dim, init_value=1)

        self.dwconv1 = ResDWConv(out_dim, kernel_size=3)
        self.norm1 = norm_layer(out_dim)
        self.fusion = nn.Sequential(
            nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1, groups=out_dim),
            BatchNorm2d(out_dim),
            GELU(),
            nn.Conv2d(out_dim, dim, kernel_size=1),
            GRN(dim),
        )
        self.weight_query = nn.Sequential(
            nn.Conv2d(dim, dim // 2, kernel_size=1, bias=False),
            BatchNorm2d(dim // 2),
        )
        self.weight_key = nn.Sequential(
            AdaptiveAvgPool2d(7),
            nn.Conv2d(ctx_dim, dim // 2, kernel_size=1, bias=False),
            BatchNorm2d(dim // 2),
        )
        self.weight_proj = nn.Conv2d(49, kernel_size**2 + smk_size**2, kernel_size=1)
        self.dyconv_proj = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=1, bias=False),
            BatchNorm2d(dim),
        )
        self.lepe = nn.Sequential(
            DilatedReparamBlock(
                dim, kernel_size=kernel_size, deploy=deploy, attempt_use_lk_impl=use_gemm
            ),
            BatchNorm2d(dim),
        )
        self.se_layer = SEModule(dim)
        self.gate = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=1, bias=False),
            BatchNorm2d(dim),
            nn.SiLU(),
        )
        self.proj = nn.Sequential(
            BatchNorm2d(dim),
            nn.Conv2d(dim, out_dim, kernel_size=1),
        )
        self.dwconv2 = ResDWConv(out_dim, kernel_size=3)
        self.norm2 = norm_layer(out_dim)
        self.mlp = nn.Sequential(
            nn.Conv2d(out_dim, mlp_dim, kernel_size=1),
            GELU(),
            ResDWConv(mlp_dim, kernel_size=3),
            GRN(mlp_dim),
            nn.Conv2d(mlp_dim, out_dim, kernel_size=1),
        )
        self.ls1 = (
            LayerScale(out_dim, init_value=ls_init_value)
            if ls_init_value is not None
            else nn.Identity()
        )
        self.ls2 = (
            LayerScale(out_dim, init_value=ls_init_value)
            if ls_init_value is not None
            else nn.Identity()
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.get_rpb()

    def get_rpb(self) -> None:
        """Zero-initialised relative position bias tables for the small and large windows."""
        self.rpb_size1 = 2 * self.smk_size - 1
        self.rpb1 = jt.zeros((self.num_heads, self.rpb_size1, self.rpb_size1))
        self.rpb_size2 = 2 * self.kernel_size - 1
        self.rpb2 = jt.zeros((self.num_heads, self.rpb_size2, self.rpb_size2))

    def apply_rpb(
        self, attn: jt.Var, rpb: jt.Var, height: int, width: int, kernel_size: int
    ) -> jt.Var:
        """Add each (query, neighbour) pair's relative position bias to attn (B,G,H,W,K*K)."""
        idx = jt.array(rpb_index(height, width, kernel_size).astype(np.int32))
        bias = rpb.flatten(1)[:, idx]  # (G, H*W, K*K)
        return attn + bias.reshape(1, self.num_heads, height, width, kernel_size**2)

    def _forward_inner(self, x: jt.Var, h_x: jt.Var, h_r: jt.Var) -> tuple[jt.Var, jt.Var | None]:
        input_resolution = tuple(x.shape[2:])
        B, C, H, W = x.shape
        C_h = h_x.shape[1]

        if not self.is_first:
            h_x = self.x_scale(h_x) + self.h_scale(h_r)

        x_f = jt.concat([x, h_x], dim=1)
        x_f = self.dwconv1(x_f)
        identity = x_f
        x_f = self.norm1(x_f)
        x = self.fusion(x_f)
        gate = self.gate(x)
        lepe = self.lepe(x)

        # Maps smaller than the window are upsampled to it, then pooled back after na2d.
        is_pad = min(H, W) < self.kernel_size
        if is_pad:
            if H < W:
                size = (self.kernel_size, int(self.kernel_size / H * W))
            else:
                size = (int(self.kernel_size / W * H), self.kernel_size)
            x = interpolate(x, size)
            x_f = interpolate(x_f, size)
            H, W = size

        query, key = jt.split(x_f, [C, C_h], dim=1)
        query = self.weight_query(query) * self.scale
        key = self.weight_key(key)
        G = self.num_heads
        query = query.reshape(B, G, -1, H * W)  # b (g c) h w -> b g c n
        key = key.reshape(B, G, -1, 49)  # b (g c) 7 7 -> b g c l
        weight = matmul_tn(query, key)  # query^T @ key: b g n l (CPU: models/matmul_jittor.py)
        weight = self.weight_proj(weight.permute(0, 3, 1, 2))  # 1x1 conv over l: b l' g n
        weight = weight.permute(0, 2, 3, 1).reshape(B, G, H, W, -1)  # b g h w l'

        attn1, attn2 = jt.split(weight, [self.smk_size**2, self.kernel_size**2], dim=-1)
        attn1 = self.apply_rpb(attn1, self.rpb1, H, W, self.smk_size)
        attn2 = self.apply_rpb(attn2, self.rpb2, H, W, self.kernel_size)
        attn1 = softmax_last(attn1)
        attn2 = softmax_last(attn2)
        # b (m g c) h w -> m b g h w c: the first half of the channels uses the small window.
        value = x.reshape(B, 2, G, -1, H, W).permute(1, 0, 2, 4, 5, 3)

        x1 = na2d_av(attn1, value[0], kernel_size=self.smk_size)
        x2 = na2d_av(attn2, value[1], kernel_size=self.kernel_size)
        x = jt.concat([x1, x2], dim=1)  # b 2g h w c
        x = x.permute(0, 1, 4, 2, 3).reshape(B, -1, H, W)  # b (2g c) h w

        if is_pad:
            x = adaptive_avg_pool2d(x, input_resolution)

        x = self.dyconv_proj(x)
        x = x + lepe
        x = self.se_layer(x)
        x = gate * x
        x = self.proj(x)

        if self.res_scale:
            x = self.ls1(identity) + self.drop_path(x)
        else:
            x = identity + self.drop_path(self.ls1(x))

        x = self.dwconv2(x)
        if self.res_scale:
            x = self.ls2(x) + self.drop_path(self.mlp(self.norm2(x)))
        else:
            x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))

        if self.is_last:
            return (x, None)
        l_x, h_x = jt.split(x, [C, C_h], dim=1)
        return (l_x, h_x)

    def execute(self, x: jt.Var, h_x: jt.Var, h_r: jt.Var) -> tuple[jt.Var, jt.Var | None]:
        return self._forward_inner(x, h_x, h_r)


class OverLoCK(nn.Module):
    """OverLoCK: Overview-first, Look-Closely-next ConvNet (https://arxiv.org/abs/2502.20087).

    Base-Net (stages 1-3) -> Overview-Net (stage 4) produces a coarse context; Focus-Net
    (sub-stages 3 and 4, DynamicConvBlocks) re-reads stage-3 features guided by that context.
    Training mode returns ``{'main': logits, 'aux': logits}`` (aux head on the Overview-Net),
    eval mode the main logits. ``sync_bn``: BatchNorm over the global batch of all processes;
    None (the official behaviour) turns it on when Jittor runs under MPI.
    """

    def __init__(
        self,
        depth: Sequence[int] = (2, 2, 2, 2),
        sub_depth: Sequence[int] = (4, 2),
        in_chans: int = 3,
        embed_dim: Sequence[int] = (96, 192, 384, 768),
        kernel_size: Sequence[int] = (7, 7, 7, 7),
        mlp_ratio: Sequence[float] = (4, 4, 4, 4),
        sub_mlp_ratio: Sequence[float] = (4, 4),
        sub_num_heads: Sequence[int] = (4, 8),
        ls_init_value: Sequence[float | None] = (None, None, 1, 1),
        res_scale: bool = True,
        smk_size: int = 5,
        deploy: bool = False,
        use_gemm: bool = True,
        use_ds: bool = True,
        drop_rate: float = 0,  # accepted for config compatibility; unused, as officially
        drop_path_rate: float = 0,
        norm_layer=LayerNorm2d,
        projection: int = 1024,
        num_classes: int = 1000,
        use_checkpoint: Sequence[int] = (0, 0, 0, 0),
        sync_bn: bool | None = None,
    ):
        super().__init__()
        fusion_dim = embed_dim[-1] + embed_dim[-1] // 4
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim

        self.patch_embed1 = stem(in_chans, embed_dim[0])
        self.patch_embed2 = downsample(embed_dim[0], embed_dim[1])
        self.patch_embed3 = downsample(embed_dim[1], embed_dim[2])
        self.patch_embed4 = downsample(embed_dim[2], embed_dim[3])
        self.high_level_proj = nn.Conv2d(embed_dim[-1], embed_dim[-1] // 4, kernel_size=1)
        self.patch_embedx = CTXDownsample(embed_dim[2], embed_dim[3])

        dpr = np.linspace(0, drop_path_rate, sum(depth) + sum(sub_depth)).tolist()
        first = np.cumsum([0, *depth, *sub_depth]).tolist()  # first dpr index of each stage

        def rep_stage(s: int) -> nn.ModuleList:
            return nn.ModuleList(
                [
                    RepConvBlock(
                        dim=embed_dim[s],
                        kernel_size=kernel_size[s],
                        mlp_ratio=mlp_ratio[s],
                        ls_init_value=ls_init_value[s],
                        res_scale=res_scale,
                        drop_path=dpr[first[s] + i],
                        norm_layer=norm_layer,
                        use_gemm=use_gemm,
                        deploy=deploy,
                        use_checkpoint=(i < use_checkpoint[s]),
                    )
                    for i in range(depth[s])
                ]
            )

        def dyn_stage(j: int) -> nn.ModuleList:
            s = j + 2  # sub-stage j re-reads stage s
            return nn.ModuleList(
                [
                    DynamicConvBlock(
                        dim=embed_dim[s],
                        ctx_dim=embed_dim[-1],
                        kernel_size=kernel_size[s],
                        num_heads=sub_num_heads[j],
                        pool_size=7,
                        mlp_ratio=sub_mlp_ratio[j],
                        ls_init_value=ls_init_value[s],
                        res_scale=res_scale,
                        drop_path=dpr[first[4 + j] + i],
                        norm_layer=norm_layer,
                        smk_size=smk_size,
                        use_gemm=use_gemm,
                        deploy=deploy,
                        is_first=(j == 0 and i == 0),
                        is_last=(j == 1 and i == sub_depth[1] - 1),
                        use_checkpoint=(i < use_checkpoint[s]),
                    )
                    for i in range(sub_depth[j])
                ]
            )

        self.blocks1 = rep_stage(0)
        self.blocks2 = rep_stage(1)
        self.blocks3 = rep_stage(2)
        self.blocks4 = rep_stage(3)
        self.sub_blocks3 = dyn_stage(0)
        self.sub_blocks4 = dyn_stage(1)

        if use_ds:  # auxiliary (deep-supervision) head on the Overview-Net context
            self.aux_head = nn.Sequential(
                BatchNorm2d(embed_dim[-1]),
                AdaptiveAvgPool2d(1),
                nn.Conv2d(embed_dim[-1], num_classes, kernel_size=1)
                if num_classes > 0
                else nn.Identity(),
            )
        self.head = nn.Sequential(
            nn.Conv2d(fusion_dim, projection, kernel_size=1, bias=False),
            BatchNorm2d(projection),
            nn.SiLU(),
            AdaptiveAvgPool2d(1),
            nn.Conv2d(projection, num_classes, kernel_size=1) if num_classes > 0 else nn.Identity(),
        )

        self.apply(self._init_weights)
        if sync_bn or (sync_bn is None and jt.in_mpi):
            convert_sync_batchnorm(self)
        use_cpu_depthwise(self)  # speed only: oneDNN has no fast NCHW depthwise path

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv1d)):
            jt.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                jt.init.constant_(m.bias, 0.0)
        elif isinstance(m, (LayerNorm2d, BatchNorm2d)):
            jt.init.constant_(m.weight, 1.0)
            jt.init.constant_(m.bias, 0.0)

    def reparam(self) -> OverLoCK:
        """Merge every DilatedReparamBlock into a single large kernel (the deploy form)."""
        for m in self.modules():
            if isinstance(m, DilatedReparamBlock):
                m.merge_dilated_branches()
        use_cpu_depthwise(self)  # the merged kernels are new convolutions
        return self

    def forward_pre_features(self, x: jt.Var) -> jt.Var:
        x = self.patch_embed1(x)
        for blk in self.blocks1:
            x = blk(x)
        x = self.patch_embed2(x)
        for blk in self.blocks2:
            x = blk(x)
        return x

    def forward_base_features(self, x: jt.Var) -> tuple[jt.Var, jt.Var]:
        x = self.patch_embed3(x)
        for blk in self.blocks3:
            x = blk(x)
        ctx = self.patch_embed4(x)
        for blk in self.blocks4:
            ctx = blk(ctx)
        return (x, ctx)

    def forward_sub_features(self, x: jt.Var, ctx: jt.Var) -> tuple[jt.Var, jt.Var]:
        ctx_cls = ctx
        ctx_ori = self.high_level_proj(ctx)
        ctx_up = interpolate(ctx_ori, tuple(x.shape[2:]))

        for idx, blk in enumerate(self.sub_blocks3):
            if idx == 0:
                ctx = ctx_up
            x, ctx = blk(x, ctx, ctx_up)

        x, ctx = self.patch_embedx(x, ctx)
        for blk in self.sub_blocks4:
            x, ctx = blk(x, ctx, ctx_ori)
        return (x, ctx_cls)

    def forward_features(self, x: jt.Var) -> tuple[jt.Var, jt.Var]:
        x = self.forward_pre_features(x)
        x, ctx = self.forward_base_features(x)
        return self.forward_sub_features(x, ctx)

    def execute(self, x: jt.Var) -> jt.Var | dict[str, jt.Var]:
        x, ctx = self.forward_features(x)
        x = self.head(x).flatten(1)
        if hasattr(self, "aux_head") and self.is_training():
            return dict(main=x, aux=self.aux_head(ctx).flatten(1))
        return x


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),  # ImageNet defaults, as timm's
        "std": (0.229, 0.224, 0.225),
        "first_conv": "patch_embed1.0",
        "classifier": "head.4",
        **kwargs,
    }


# Accepted so the same call works for both twins; they only matter for timm hub weights.
_TIMM_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _create_overlock(
    variant: str, pretrained: bool, crop_pct: float, model_args: dict[str, Any], **kwargs: Any
) -> OverLoCK:
    if pretrained:
        raise ValueError(
            f"{variant}: pretrained=True is not supported (no hub downloads); build the model "
            "and load a local checkpoint with load_state_dict"
        )
    for key in _TIMM_KWARGS:
        kwargs.pop(key, None)
    model = OverLoCK(**{**model_args, **kwargs})
    model.pretrained_cfg = model.default_cfg = _cfg(crop_pct=crop_pct)
    return model


_XXT = dict(
    depth=[1, 1, 2, 1],
    sub_depth=[3, 1],
    embed_dim=[24, 48, 96, 128],
    kernel_size=[13, 11, 9, 7],
    mlp_ratio=[2, 2, 2, 2],
    sub_num_heads=[1, 2],
    sub_mlp_ratio=[2, 2],
    projection=256,
)
_XT = dict(
    depth=[2, 2, 3, 2],
    sub_depth=[6, 2],
    embed_dim=[56, 112, 256, 336],
    kernel_size=[17, 15, 13, 7],
    mlp_ratio=[4, 4, 4, 4],
    sub_num_heads=[4, 6],
    sub_mlp_ratio=[3, 3],
)
_T = dict(
    depth=[4, 4, 6, 2],
    sub_depth=[12, 2],
    embed_dim=[64, 128, 256, 512],
    kernel_size=[17, 15, 13, 7],
    mlp_ratio=[4, 4, 4, 4],
    sub_num_heads=[4, 8],
    sub_mlp_ratio=[3, 3],
)
_S = dict(
    depth=[6, 6, 8, 3],
    sub_depth=[16, 3],
    embed_dim=[64, 128, 320, 512],
    kernel_size=[17, 15, 13, 7],
    mlp_ratio=[4, 4, 4, 4],
    sub_num_heads=[8, 16],
    sub_mlp_ratio=[3, 3],
)
_B = dict(
    depth=[8, 8, 10, 4],
    sub_depth=[20, 4],
    embed_dim=[80, 160, 384, 576],
    kernel_size=[17, 15, 13, 7],
    mlp_ratio=[4, 4, 4, 4],
    sub_num_heads=[6, 9],
    sub_mlp_ratio=[3, 3],
)


def overlock_xxt(pretrained: bool = False, num_classes: int = 1000, **kwargs: Any) -> OverLoCK:
    """OverLoCK-XXT: a small variant of this project (not in the paper), for quick experiments."""
    return _create_overlock(
        "overlock_xxt", pretrained, 0.9, _XXT, num_classes=num_classes, **kwargs
    )


def overlock_xt(pretrained: bool = False, num_classes: int = 1000, **kwargs: Any) -> OverLoCK:
    return _create_overlock(
        "overlock_xt", pretrained, 0.925, _XT, num_classes=num_classes, **kwargs
    )


def overlock_t(pretrained: bool = False, num_classes: int = 1000, **kwargs: Any) -> OverLoCK:
    return _create_overlock("overlock_t", pretrained, 0.95, _T, num_classes=num_classes, **kwargs)


def overlock_s(pretrained: bool = False, num_classes: int = 1000, **kwargs: Any) -> OverLoCK:
    return _create_overlock("overlock_s", pretrained, 0.95, _S, num_classes=num_classes, **kwargs)


def overlock_b(pretrained: bool = False, num_classes: int = 1000, **kwargs: Any) -> OverLoCK:
    return _create_overlock("overlock_b", pretrained, 0.975, _B, num_classes=num_classes, **kwargs)


# Reparameterised (deploy) variants: every DilatedReparamBlock is one large kernel with bias.
# They load checkpoints saved after ``model.reparam()`` (or the official *_reparam.pth files).


def overlock_xxt_reparam(
    pretrained: bool = False, num_classes: int = 1000, **kwargs: Any
) -> OverLoCK:
    return overlock_xxt(pretrained, num_classes, deploy=True, **kwargs)


def overlock_xt_reparam(
    pretrained: bool = False, num_classes: int = 1000, **kwargs: Any
) -> OverLoCK:
    return overlock_xt(pretrained, num_classes, deploy=True, **kwargs)


def overlock_t_reparam(
    pretrained: bool = False, num_classes: int = 1000, **kwargs: Any
) -> OverLoCK:
    return overlock_t(pretrained, num_classes, deploy=True, **kwargs)


def overlock_s_reparam(
    pretrained: bool = False, num_classes: int = 1000, **kwargs: Any
) -> OverLoCK:
    return overlock_s(pretrained, num_classes, deploy=True, **kwargs)


def overlock_b_reparam(
    pretrained: bool = False, num_classes: int = 1000, **kwargs: Any
) -> OverLoCK:
    return overlock_b(pretrained, num_classes, deploy=True, **kwargs)
