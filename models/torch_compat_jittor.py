"""PyTorch semantics for the Jittor twin: small versions of the built-ins where Jittor's do not
compute what PyTorch computes (each says why).

BatchNorm2d / SyncBatchNorm / convert_sync_batchnorm, adaptive_avg_pool2d / AdaptiveAvgPool2d,
interpolate (bilinear) and DropPath, with torch's names and signatures, so that
``models/overlock_jittor.py`` reads like ``models/overlock_torch.py``. On the CPU the batch
statistics run as the multi-threaded kernel of ``models/fused_jittor.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from core.jittor_env import jt  # configures Jittor before its first import

from .fused_jittor import batch_norm_train

nn = jt.nn


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


def interpolate(
    x: jt.Var, size: Sequence[int], mode: str = "bilinear", align_corners: bool = False
) -> jt.Var:
    """``F.interpolate(x, size, mode='bilinear', align_corners=False)`` (NCHW), separably.

    Only that mode (the one OverLoCK uses); torch's signature, so the twins' calls read alike.
    """
    if mode != "bilinear" or align_corners:
        raise ValueError(f"interpolate: only mode='bilinear', align_corners=False, not {mode!r}")
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
