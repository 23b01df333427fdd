"""2-D neighbourhood attention "AV" for Jittor, with NATTEN's ``na2d_av`` semantics.

Twin of ``models/na2d_torch.py`` (there is no NATTEN for Jittor, so no backend switch); the
window rule and argument checks come from ``models/na2d_common.py``.

Form: ``value.reindex`` gathers each query's neighbours through the shared index table
(passed as a Jittor ``extras`` input, so the compiled kernels do not depend on the map size),
then multiply by the broadcast weights and sum over the window. Jittor's fuser compiles
reindex + multiply + sum into one loop kernel, so the (B, G, H*W, K*K, C) neighbour tensor is
never materialised; autodiff of the same graph gives two more fused kernels (d_attn:
reindex * broadcast, summed over C; d_value: broadcast * broadcast, scatter-added by
``reindex_reduce``). ``jt.profile_scope`` shows exactly those 3 kernels per forward+backward.

Measured on this project's 2-core CPU (Jittor 1.3.11; its CPU kernels are single-threaded),
float32, best of 15: forward / forward+backward, and the process's RSS growth over the first
forward+backward (kernels already compiled), against the size the neighbour tensor would have.
NATTEN 0.17.4's CPU kernel (torch 2.6) for reference.

  attn shape (value dim C)  K   this op          RSS growth  neighbour tensor  NATTEN
  (64,2,9,9,25)    C=24     5   3.4 / 14 ms      12 MiB      24 MiB            25 / 300 ms
  (64,2,9,9,81)    C=24     9   11 / 44 ms       14 MiB      77 MiB            78 / 958 ms
  (64,4,7,7,25)    C=16     5   2.9 / 11 ms      11 MiB      19 MiB            20 / 290 ms
  (64,4,7,7,49)    C=16     7   5.7 / 22 ms      13 MiB      38 MiB            38 / 567 ms
  (8,2,28,28,49)   C=24     7   7.9 / 32 ms      13 MiB      56 MiB
  (8,2,56,56,49)   C=24     7   33 / 132 ms      27 MiB      225 MiB           226 / 2785 ms

The first four rows are OverLoCK-XT at batch 64. For (64,2,9,9,81), ``jt.profile_scope`` over
forward+backward lists the 3 fused kernels (forward 11 ms, d_attn 11 ms, d_value 22 ms: the
scatter-add is the slowest) and 17 MB of memory traffic; Jittor's allocator holds 15 MB.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from utils.jittor_env import jt

from .na2d_common import Pair, check_na2d_args, neighbour_table


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
    table = jt.array(_index_table(H, W, ks, dil))
    attn = attn.reshape(B, G, H * W, ks[0] * ks[1])
    value = value.reshape(B, G, H * W, C)
    out = _av_reindex(attn, value, table)
    return out.reshape(B, G, H, W, C)


@functools.lru_cache(maxsize=256)
def _index_table(height: int, width: int, kernel_size: Pair, dilation: Pair) -> np.ndarray:
    """:func:`neighbour_table` as int32, the index type Jittor's reindex kernels use."""
    return neighbour_table(height, width, kernel_size, dilation).astype(np.int32)


def _av_reindex(attn: jt.Var, value: jt.Var, table: jt.Var) -> jt.Var:
    """attn (B, G, N, KK), value (B, G, N, C) -> (B, G, N, C) via fused gathered neighbours."""
    B, G, N, KK = attn.shape
    shape = [B, G, N, KK, value.shape[3]]
    # @e0(n, k) reads table[n, k]; the kernel key holds no size, so no recompile per shape.
    neighbours = value.reindex(shape, ["i0", "i1", "@e0(i2,i3)", "i4"], extras=[table])
    return (neighbours * attn.broadcast(shape, [4])).sum(3)


__all__ = ["na2d_av"]
