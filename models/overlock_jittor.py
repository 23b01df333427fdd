"""OverLoCK in Jittor: the twin of ``models/overlock_torch.py``, same network and names.

OverLoCK: An Overview-first-Look-Closely-next ConvNet with Context-Mixing Dynamic Kernels
(Lou & Yu, CVPR 2025, https://arxiv.org/abs/2502.20087). Module, parameter and buffer names follow
the official PyTorch model, so its checkpoints load with no missing or unexpected keys.

Where Jittor's built-ins do not compute what PyTorch computes, the twin uses small versions
with PyTorch's semantics and names: BatchNorm2d, AdaptiveAvgPool2d / adaptive_avg_pool2d,
interpolate (bilinear) and DropPath from ``models/torch_compat_jittor.py``, and its own
LayerNorm2d. On the CPU, BatchNorm, LayerNorm, GELU and softmax run as the multi-threaded kernels
of ``models/fused_jittor.py`` (Jittor's generated CPU loops are single-threaded), depthwise
convolutions as those of ``models/depthwise_jittor.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.jittor_env import jt  # configures Jittor before its first import

from .contmix_jittor import contmix_av
from .depthwise_jittor import CPUDepthwiseConv, use_cpu_depthwise
from .fused_jittor import GELU, layer_norm_channels, softmax_last
from .matmul_jittor import matmul_tn
from .overlock_common import (
    block_args,
    check_global_pool,
    dilated_branches,
    model_factories,
    rpb_index,
    stage_feature_info,
    take_indices,
    train_output_type,
    upsampled_size,
)
from .torch_compat_jittor import (
    AdaptiveAvgPool2d,
    BatchNorm2d,
    DropPath,
    SyncBatchNorm,
    adaptive_avg_pool2d,
    convert_sync_batchnorm,
    interpolate,
)
from .variants import ALL_MODEL_NAMES

nn = jt.nn

TrainOutput = train_output_type(jt.Var, __name__)
__all__ = ["OverLoCK", "TrainOutput", *ALL_MODEL_NAMES]


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


def _merge_for_inference(conv: nn.Conv2d) -> bool:
    """Whether a DilatedReparamBlock around ``conv`` merges its branches per call: in
    evaluation without gradients, when ``conv`` has the CPU depthwise kernel (on CUDA, and in
    the CUDA forms, the branches run as they are)."""
    cpu_kernel = isinstance(getattr(conv, "depthwise_conv", None), CPUDepthwiseConv)
    return cpu_kernel and not conv.is_training() and bool(jt.flags.no_grad)


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
        self.kernel_sizes, self.dilates = dilated_branches(kernel_size)

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
        if _merge_for_inference(self.lk_origin):
            # Without gradients the branches are merged on the fly, as reparam() would: one
            # conv instead of 1 + len(dilates) convs and BatchNorms (same math, to ~1e-6).
            kernel, bias = self._merged_kernel()
            return self.lk_origin.depthwise_conv(x, kernel) + bias.reshape(1, -1, 1, 1)
        out = self.origin_bn(self.lk_origin(x))
        for k, r in zip(self.kernel_sizes, self.dilates, strict=True):
            conv = getattr(self, f"dil_conv_k{k}_{r}")
            bn = getattr(self, f"dil_bn_k{k}_{r}")
            out = out + bn(conv(x))
        return out

    def _merged_kernel(self) -> tuple[jt.Var, jt.Var]:
        """(kernel, bias) of the one conv equal to every branch and BN (BN running stats)."""
        origin_k, origin_b = fuse_bn(self.lk_origin, self.origin_bn)
        for k, r in zip(self.kernel_sizes, self.dilates, strict=True):
            branch_k, branch_b = fuse_bn(
                getattr(self, f"dil_conv_k{k}_{r}"), getattr(self, f"dil_bn_k{k}_{r}")
            )
            origin_k = merge_dilated_into_large_kernel(origin_k, branch_k, r)
            origin_b = origin_b + branch_b
        return origin_k, origin_b

    def merge_dilated_branches(self) -> None:
        """Fold every branch and BN into ``lk_origin`` (uses BN running statistics)."""
        if not hasattr(self, "origin_bn"):
            return
        with jt.no_grad():
            origin_k, origin_b = self._merged_kernel()
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


def _fit_to_window(x: jt.Var, kernel_size: int) -> jt.Var:
    """``x`` resized (bilinear) so that its short side is the ContMix window when it is shorter,
    as the official model does; else ``x`` itself."""
    height, width = x.shape[2], x.shape[3]
    if min(height, width) >= kernel_size:
        return x
    size = upsampled_size(height, width, kernel_size)
    return interpolate(x, size=size, mode="bilinear", align_corners=False)


def _pool_to_size_of(x: jt.Var, reference: jt.Var) -> jt.Var:
    """``x`` average-pooled back to the height and width of ``reference`` (undoing
    :func:`_fit_to_window`); ``x`` itself when they already agree."""
    if tuple(x.shape[2:]) == tuple(reference.shape[2:]):
        return x
    return adaptive_avg_pool2d(x, tuple(reference.shape[2:]))


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
        self._build_contmix(dim, ctx_dim, out_dim, norm_layer, deploy, use_gemm)
        self._build_mlp(dim, out_dim, mlp_ratio, norm_layer, ls_init_value, drop_path)
        self.get_rpb()

    def _build_contmix(
        self, dim: int, ctx_dim: int, out_dim: int, norm_layer, deploy: bool, use_gemm: bool
    ) -> None:
        """The first residual branch: fusion, query / key of the dynamic kernels, LePE, SE, gate."""
        kernel_size, smk_size = self.kernel_size, self.smk_size
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
        self.weight_proj = nn.Conv2d(
            49, kernel_size * kernel_size + smk_size * smk_size, kernel_size=1
        )
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

    def _build_mlp(
        self,
        dim: int,
        out_dim: int,
        mlp_ratio: float,
        norm_layer,
        ls_init_value: float | None,
        drop_path: float,
    ) -> None:
        """The second residual branch (GRN-MLP), then both branches' layer scales and drop path."""
        mlp_dim = int(dim * mlp_ratio)
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
        return attn + bias.reshape(1, self.num_heads, height, width, kernel_size * kernel_size)

    def _dynamic_kernels(
        self, x_f: jt.Var, C: int, C_h: int, H: int, W: int
    ) -> tuple[jt.Var, jt.Var]:
        """The small- and large-window kernels of every position, (B, G, H, W, k*k) each."""
        B = x_f.shape[0]
        query, key = jt.split(x_f, [C, C_h], dim=1)
        query = self.weight_query(query) * self.scale
        key = self.weight_key(key)
        G = self.num_heads
        query = query.reshape(B, G, -1, H * W)  # b (g c) h w -> b g c n
        key = key.reshape(B, G, -1, 49)  # b (g c) 7 7 -> b g c l
        weight = matmul_tn(query, key)  # query^T @ key: b g n l (CPU: models/matmul_jittor.py)
        # weight_proj, a 1x1 conv over l, as a product with each window's rows of its kernel:
        # the twin's permutes around the conv and its split of the result are copies here.
        weight = weight.reshape(B * G * H * W, -1)
        proj_w = self.weight_proj.weight.reshape(self.weight_proj.weight.shape[0], -1)
        proj_b = self.weight_proj.bias
        small = self.smk_size * self.smk_size
        attn1, attn2 = (
            (nn.matmul_transpose(weight, proj_w[rows]) + proj_b[rows]).reshape(B, G, H, W, -1)
            for rows in (slice(0, small), slice(small, None))
        )
        attn1 = self.apply_rpb(attn1, self.rpb1, H, W, self.smk_size)
        attn2 = self.apply_rpb(attn2, self.rpb2, H, W, self.kernel_size)
        attn1 = softmax_last(attn1)
        attn2 = softmax_last(attn2)
        return attn1, attn2

    def _contmix(self, x: jt.Var, x_f: jt.Var, C: int, C_h: int) -> jt.Var:
        """ContMix: the dynamic kernels from ``x_f`` applied to ``x`` (na2d_av, both windows)."""
        inputs = x
        # Maps smaller than the window are upsampled to it, then pooled back after na2d.
        x = _fit_to_window(x, self.kernel_size)
        x_f = _fit_to_window(x_f, self.kernel_size)
        B, _, H, W = x.shape

        attn1, attn2 = self._dynamic_kernels(x_f, C, C_h, H, W)
        # The first half of the channels uses the small window: b (m g c) h w, two na2d_av
        # (one kernel on the CPU, without the twin's permutes and copies).
        x = contmix_av(attn1, attn2, x, self.smk_size, self.kernel_size)
        return _pool_to_size_of(x, inputs)

    def _forward_inner(self, x: jt.Var, h_x: jt.Var, h_r: jt.Var) -> tuple[jt.Var, jt.Var | None]:
        C = x.shape[1]
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

        x = self._contmix(x, x_f, C, C_h)
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
    Training mode returns ``TrainOutput(main, aux)`` logits (aux head on the Overview-Net), which
    also reads as the official ``{'main', 'aux'}`` dict; eval mode the main logits.
    ``sync_bn``: BatchNorm over the global batch of all processes;
    None (the official behaviour) turns it on when Jittor runs under MPI.

    The PyTorch twin's timm model interface, with the same names and arguments: ``num_features``,
    ``head_hidden_size``, ``feature_info``, ``forward_features`` / ``forward_head`` /
    ``forward_intermediates``, ``reset_classifier`` / ``get_classifier``,
    ``prune_intermediate_layers``; ``global_pool``: "avg" or "". ``features_only=True``: the
    model returns the stage maps at ``out_indices`` (a list, as timm's feature extractor; what
    they need is all it keeps), ``out_indices`` holding their stage numbers.
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
        global_pool: str = "avg",
        features_only: bool = False,
        out_indices: int | Sequence[int] = (0, 1, 2, 3),
    ):
        super().__init__()
        self.num_classes = num_classes
        self.global_pool = check_global_pool(global_pool)
        self.embed_dim = embed_dim
        self.num_features = embed_dim[-1] + embed_dim[-1] // 4  # Focus-Net output: x and context
        self.head_hidden_size = projection
        self.feature_info = stage_feature_info(depth, sub_depth, embed_dim)
        self.num_stages = len(self.feature_info)  # the stages the model runs (fewer once pruned)
        self._build_embeddings(in_chans, embed_dim)

        rep_args, dyn_args = block_args(
            depth=depth, sub_depth=sub_depth, embed_dim=embed_dim, kernel_size=kernel_size,
            mlp_ratio=mlp_ratio, sub_mlp_ratio=sub_mlp_ratio, sub_num_heads=sub_num_heads,
            ls_init_value=ls_init_value, smk_size=smk_size, drop_path_rate=drop_path_rate,
            use_checkpoint=use_checkpoint,
        )  # fmt: skip
        shared = dict(res_scale=res_scale, norm_layer=norm_layer, use_gemm=use_gemm, deploy=deploy)
        self.blocks1 = nn.ModuleList([RepConvBlock(**a, **shared) for a in rep_args[0]])
        self.blocks2 = nn.ModuleList([RepConvBlock(**a, **shared) for a in rep_args[1]])
        self.blocks3 = nn.ModuleList([RepConvBlock(**a, **shared) for a in rep_args[2]])
        self.blocks4 = nn.ModuleList([RepConvBlock(**a, **shared) for a in rep_args[3]])
        self.sub_blocks3 = nn.ModuleList([DynamicConvBlock(**a, **shared) for a in dyn_args[0]])
        self.sub_blocks4 = nn.ModuleList([DynamicConvBlock(**a, **shared) for a in dyn_args[1]])
        self._build_heads(embed_dim[-1], projection, num_classes, use_ds)

        self.apply(self._init_weights)
        if sync_bn or (sync_bn is None and jt.in_mpi):
            convert_sync_batchnorm(self)
        use_cpu_depthwise(self)  # speed only: oneDNN has no fast NCHW depthwise path
        self.features_only = features_only
        if features_only:  # what timm's features_only does: keep what those maps need
            self.out_indices = self.prune_intermediate_layers(out_indices)

    def _build_embeddings(self, in_chans: int, embed_dim: Sequence[int]) -> None:
        """The stem, the downsampling between stages and the context projections."""
        self.patch_embed1 = stem(in_chans, embed_dim[0])
        self.patch_embed2 = downsample(embed_dim[0], embed_dim[1])
        self.patch_embed3 = downsample(embed_dim[1], embed_dim[2])
        self.patch_embed4 = downsample(embed_dim[2], embed_dim[3])
        self.high_level_proj = nn.Conv2d(embed_dim[-1], embed_dim[-1] // 4, kernel_size=1)
        self.patch_embedx = CTXDownsample(embed_dim[2], embed_dim[3])

    def _build_heads(self, ctx_dim: int, projection: int, num_classes: int, use_ds: bool) -> None:
        """The main head on the Focus-Net output and, with ``use_ds``, the auxiliary head."""
        if use_ds:  # auxiliary (deep-supervision) head on the Overview-Net context
            self.aux_head = nn.Sequential(
                BatchNorm2d(ctx_dim),
                self._pool(),
                self._classifier(ctx_dim, num_classes),
            )
        self.head = nn.Sequential(
            nn.Conv2d(self.num_features, projection, kernel_size=1, bias=False),
            BatchNorm2d(projection),
            nn.SiLU(),
            self._pool(),
            self._classifier(projection, num_classes),
        )

    def _pool(self) -> nn.Module:
        """The heads' global pooling for ``self.global_pool``."""
        return AdaptiveAvgPool2d(1) if self.global_pool == "avg" else nn.Identity()

    def _classifier(self, in_dim: int, num_classes: int) -> nn.Module:
        """A 1x1-conv classifier (as officially) initialised as the rest, or none for 0 classes."""
        if num_classes <= 0:
            return nn.Identity()
        conv = nn.Conv2d(in_dim, num_classes, kernel_size=1)
        if hasattr(self, "head"):  # a new classifier (Jittor has one device for all)
            self._init_weights(conv)
        return conv

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

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch for ``use_checkpoint``: Jittor has no recomputation (refused loudly)."""
        _no_checkpoint(enable)

    def get_classifier(self) -> nn.Module:
        """The main head's classifier (a 1x1 conv; Identity without classes)."""
        return self.head[4]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New classifiers for ``num_classes``, main and auxiliary (0: none; the heads then end
        at the pooled features); ``global_pool``: "avg", or "" for no pooling (the heads give
        maps); None keeps it."""
        # (Jittor's Sequential has no item assignment; add_module replaces a layer in place.)
        if global_pool is not None:
            self.global_pool = check_global_pool(global_pool)
            self.head.add_module("3", self._pool())
            if hasattr(self, "aux_head"):
                self.aux_head.add_module("1", self._pool())
        self.num_classes = num_classes
        self.head.add_module("4", self._classifier(self.head_hidden_size, num_classes))
        if hasattr(self, "aux_head"):
            self.aux_head.add_module("2", self._classifier(self.embed_dim[-1], num_classes))

    def prune_intermediate_layers(
        self,
        indices: int | Sequence[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop what the stage maps at ``indices`` do not need (as timm's models): the later
        stages and, with ``prune_head`` or a stage before the last, both heads (``forward``
        then returns the last kept map). ``prune_norm``: OverLoCK has no final norm, a no-op.
        Returns the kept indices, counted from the first stage."""
        taken, last = take_indices(len(self.feature_info), indices)
        dropped = {  # stage -> the modules only it and later stages use
            3: ("patch_embedx", "sub_blocks4"),
            2: (
                "patch_embed3",
                "blocks3",
                "patch_embed4",
                "blocks4",
                "high_level_proj",
                "sub_blocks3",
            ),
            1: ("patch_embed2", "blocks2"),
        }
        for stage, names in dropped.items():
            if last < stage:
                for name in names:
                    setattr(self, name, nn.Identity())
        self.num_stages = min(self.num_stages, last + 1)
        if prune_head or last < len(self.feature_info) - 1:
            self.head = nn.Sequential(*(nn.Identity() for _ in range(5)))
            if hasattr(self, "aux_head"):
                del self.aux_head
            self.num_classes, self.global_pool = 0, ""
            self.num_features = self.head_hidden_size = self.feature_info[self.num_stages - 1][
                "num_chs"
            ]
        return taken

    def forward_base_features(self, x: jt.Var) -> tuple[jt.Var, jt.Var]:
        """Base-Net stage 3 and the Overview-Net: (stage-3 features, the coarse context)."""
        x = self.patch_embed3(x)
        for block3 in self.blocks3:
            x = block3(x)
        ctx = self.patch_embed4(x)
        for block4 in self.blocks4:
            ctx = block4(ctx)
        return (x, ctx)

    def forward_sub_features(self, x: jt.Var, ctx: jt.Var) -> tuple[jt.Var, jt.Var, jt.Var]:
        """Focus-Net sub-stage 3 guided by the context: (x, its context channels, the projected
        context that sub-stage 4 reads)."""
        ctx_ori = self.high_level_proj(ctx)
        ctx_up = interpolate(ctx_ori, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)
        h_x = ctx_up
        for blk in self.sub_blocks3:
            x, h_next = blk(x, h_x, ctx_up)
            assert h_next is not None  # only the very last block drops the context
            h_x = h_next
        return x, h_x, ctx_ori

    def forward_focus_features(self, x: jt.Var, h_x: jt.Var, ctx_ori: jt.Var) -> jt.Var:
        """Focus-Net sub-stage 4: the final map (features and context, ``num_features``)."""
        x, h_x = self.patch_embedx(x, h_x)
        for blk in self.sub_blocks4:
            x, h_next = blk(x, h_x, ctx_ori)
            if h_next is not None:
                h_x = h_next
        return x

    def _forward_stages(self, x: jt.Var, last: int) -> tuple[list[jt.Var], jt.Var | None]:
        """The outputs of stages 0..``last`` (strides 4, 8, 16, 32) and the Overview-Net
        context, the aux head's input (None when stage 2 is not reached)."""
        maps: list[jt.Var] = []
        ctx: jt.Var | None = None
        x = self.patch_embed1(x)
        for block1 in self.blocks1:
            x = block1(x)
        maps.append(x)
        if last >= 1:
            x = self.patch_embed2(x)
            for block2 in self.blocks2:
                x = block2(x)
            maps.append(x)
        if last >= 2:
            x, overview = self.forward_base_features(x)
            x, h_x, ctx_ori = self.forward_sub_features(x, overview)
            ctx = overview
            maps.append(x)
            if last >= 3:
                maps.append(self.forward_focus_features(x, h_x, ctx_ori))
        return maps, ctx

    def forward_features(self, x: jt.Var) -> jt.Var:
        """The unpooled final map, (B, num_features, H/32, W/32)."""
        return self._forward_stages(x, self.num_stages - 1)[0][-1]

    def forward_intermediates(
        self,
        x: jt.Var,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[jt.Var] | tuple[jt.Var, list[jt.Var]]:
        """timm's ``forward_intermediates``: the stage maps at ``indices`` (None: all four; an
        int n: the last n; a sequence: those, negative ones from the end) and, unless
        ``intermediates_only``, the final map (``forward_features``). ``stop_early``: run no
        stage past the last one asked for (the final map is then that one). ``norm``: OverLoCK
        has no norm before its head, so there is none to apply. Only ``output_fmt="NCHW"``."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        taken, last = take_indices(len(self.feature_info), indices)
        if last >= self.num_stages:
            raise ValueError(f"stage {last} was pruned (stages 0..{self.num_stages - 1} remain)")
        maps, _ = self._forward_stages(x, last if stop_early else self.num_stages - 1)
        intermediates = [maps[i] for i in taken]
        if intermediates_only:
            return intermediates
        return maps[-1], intermediates

    def forward_head(self, x: jt.Var, pre_logits: bool = False) -> jt.Var:
        """The main head on the final map: 1x1 projection, BN, SiLU, pooling, classifier;
        ``pre_logits``: stop before the classifier (``head_hidden_size`` features)."""
        x = self.head[3](self.head[2](self.head[1](self.head[0](x))))
        if not pre_logits:
            x = self.head[4](x)
        return x.flatten(1) if self.global_pool == "avg" else x

    def execute(self, x: jt.Var) -> jt.Var | list[jt.Var] | TrainOutput:
        if self.features_only:
            return self.forward_intermediates(x, indices=self.out_indices, intermediates_only=True)
        maps, ctx = self._forward_stages(x, self.num_stages - 1)
        x = self.forward_head(maps[-1])
        if hasattr(self, "aux_head") and self.is_training() and ctx is not None:
            aux = self.aux_head(ctx)
            return TrainOutput(x, aux.flatten(1) if self.global_pool == "avg" else aux)
        return x


# overlock_<name>(pretrained=False, num_classes=1000, **kwargs) and overlock_<name>_reparam(...)
# for every variant of models/variants.py; the _reparam forms (every DilatedReparamBlock one
# large kernel with bias) load checkpoints saved after ``model.reparam()``.
globals().update(model_factories(OverLoCK, __name__))
