"""Window rule and argument checks of 2-D neighbourhood attention, shared by both frameworks.

``models/na2d_torch.py`` and ``models/na2d_jittor.py`` implement ``na2d_av`` with NATTEN's
semantics (0.17.x, non-causal). Which value pixels a query reads is decided here, once, in
numpy, so the two frameworks cannot drift apart.

Rule (NATTEN ``get_window_start``), per axis of length ``L`` with kernel ``K`` and dilation
``d``: the positions with the same remainder ``index % d`` form a subsequence; the window of a
query is the ``K`` consecutive members of its subsequence centred on it, shifted inward at the
borders so that it always holds ``K`` real positions (there is no padding). Neighbour ``k`` of
query ``i`` is ``window_start(i) + k * d``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

Pair = tuple[int, int]


def window_start(index: int, length: int, kernel_size: int, dilation: int) -> int:
    """First neighbour of query ``index`` along one axis (NATTEN's non-causal rule).

    Args:
        index: query position, ``0 <= index < length``.
        length: axis length; must be ``>= kernel_size * dilation``.
        kernel_size: odd window size ``K``.
        dilation: step ``d`` between neighbours.

    Returns:
        The position of neighbour 0; neighbour ``k`` is at ``start + k * dilation``.
    """
    group = index % dilation
    # Members of this query's dilation subsequence: group, group + d, ... < length.
    group_len = (length - group + dilation - 1) // dilation
    centred = index // dilation - kernel_size // 2
    # Shift the centred window inward so it starts and ends on real positions.
    start = min(max(centred, 0), group_len - kernel_size)
    return start * dilation + group


@functools.lru_cache(maxsize=256)
def axis_neighbours(length: int, kernel_size: int, dilation: int) -> np.ndarray:
    """Neighbour positions along one axis, shape ``(length, kernel_size)``, int64, read-only."""
    starts = np.array(
        [window_start(i, length, kernel_size, dilation) for i in range(length)], dtype=np.int64
    )
    table = starts[:, None] + np.arange(kernel_size, dtype=np.int64)[None, :] * dilation
    table.flags.writeable = False  # cached and shared: callers must not modify it
    return table


@functools.lru_cache(maxsize=256)
def neighbour_table(height: int, width: int, kernel_size: Pair, dilation: Pair) -> np.ndarray:
    """Flat neighbour indices of every query, shape ``(height * width, K0 * K1)``, int64.

    Entry ``[i * width + j, ki * K1 + kj]`` is ``row * width + col`` of the value pixel that
    attention weight ``attn[..., i, j, ki * K1 + kj]`` multiplies (NATTEN's weight order).
    Arguments must already be checked (see :func:`check_na2d_args`). Cached and read-only.
    """
    rows = axis_neighbours(height, kernel_size[0], dilation[0])  # (H, K0)
    cols = axis_neighbours(width, kernel_size[1], dilation[1])  # (W, K1)
    table = rows[:, None, :, None] * width + cols[None, :, None, :]  # (H, W, K0, K1)
    table = table.reshape(height * width, kernel_size[0] * kernel_size[1])
    table.flags.writeable = False
    return table


def _as_pair(arg: object, name: str, minimum: int, odd: bool) -> Pair:
    """``arg`` as a pair of ints (an int is used for both axes); ValueError otherwise."""
    items = tuple(arg) if isinstance(arg, (tuple, list)) else (arg, arg)
    # bool is an int subclass, but True as a kernel size is surely a mistake.
    valid = len(items) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items
    )
    if valid:
        items = tuple(int(v) for v in items)
        valid = all(v >= minimum and (v % 2 == 1 or not odd) for v in items)
    if not valid:
        what = f"an odd integer >= {minimum}" if odd else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what} or a pair of them (height, width), got {arg!r}")
    return items  # type: ignore[return-value]


def check_na2d_args(
    attn_shape: Sequence[int],
    value_shape: Sequence[int],
    kernel_size: int | Sequence[int],
    dilation: int | Sequence[int],
) -> tuple[Pair, Pair]:
    """Check ``na2d_av`` arguments as NATTEN 0.17 does; raise ValueError naming the bad one.

    Args:
        attn_shape: ``(batch, heads, height, width, K0 * K1)``.
        value_shape: ``(batch, heads, height, width, dim)``.
        kernel_size: odd int ``>= 3``, or a (height, width) pair of them.
        dilation: int ``>= 1``, or a (height, width) pair of them.

    Returns:
        ``(kernel_size, dilation)`` as (height, width) pairs.
    """
    ks = _as_pair(kernel_size, "kernel_size", minimum=3, odd=True)
    dil = _as_pair(dilation, "dilation", minimum=1, odd=False)
    value_shape, attn_shape = tuple(value_shape), tuple(attn_shape)
    if len(value_shape) != 5:
        raise ValueError(
            f"value must be 5-D (batch, heads, height, width, dim), got shape {value_shape}"
        )
    if len(attn_shape) != 5:
        raise ValueError(
            "attn must be 5-D (batch, heads, height, width, kernel_size[0] * kernel_size[1]), "
            f"got shape {attn_shape}"
        )
    if attn_shape[:4] != value_shape[:4]:
        raise ValueError(
            f"attn shape {attn_shape} and value shape {value_shape} must agree in "
            "(batch, heads, height, width)"
        )
    if attn_shape[4] != ks[0] * ks[1]:
        raise ValueError(
            f"attn.shape[-1] must be kernel_size[0] * kernel_size[1] = {ks[0]} * {ks[1]} = "
            f"{ks[0] * ks[1]}, got {attn_shape[4]}"
        )
    for axis, size, k, d in (
        ("height", value_shape[2], ks[0], dil[0]),
        ("width", value_shape[3], ks[1], dil[1]),
    ):
        if size < k * d:
            raise ValueError(
                f"value {axis} {size} is smaller than kernel_size * dilation = {k} * {d} = "
                f"{k * d}; NATTEN needs {axis} >= kernel_size * dilation"
            )
    return ks, dil


__all__ = ["Pair", "axis_neighbours", "check_na2d_args", "neighbour_table", "window_start"]
