"""2-D neighbourhood attention "AV" for PyTorch: NATTEN's ``na2d_av`` or a native twin.

Backend: NATTEN's ``natten.functional.na2d_av`` when NATTEN < 0.20 imports (0.20 removed the
op), else the native op below. ``OVERLOCK_NA2D=auto|natten|native`` or
:func:`set_na2d_backend` forces one; :func:`na2d_backend` says which runs, and the first call
prints it once to stderr.

Native op: both forms below gather value pixels by the window rule of
``models/na2d_common.py``, its neighbour table computed with tensor index arithmetic (so
TorchScript, FX and torch.compile trace the op whole; tests check it equals the numpy table);
torch autograd gives the gradients w.r.t. ``attn`` and ``value``.

- dense: scatter each (batch, head)'s weights into an (H*W, H*W) matrix and use one batched
  matmul. Costs H*W / K**2 times the needed flops, but for the small maps of OverLoCK's
  stages 3-4 it is by far the fastest.
- gather: index the (B, G, H*W, K*K, C) neighbour tensor and contract it with ``einsum``.

Measured on this project's 2-core CPU, float32, torch 2.14 with 1 thread (2 threads gave the
same ranking but noisy times on the shared machine), best of 15: forward / forward+backward,
and the process's peak RSS growth over one forward+backward. NATTEN 0.17.4 (torch 2.6) for
reference; its CPU kernels are the same with 1 or 2 threads.

  attn shape (value dim C)  K  H*W/K^2  dense                gather                NATTEN
  (64,2,9,9,25)    C=24     5    3.2    1.0 / 2.5 ms, 19 MiB  4.3 / 12 ms, 52 MiB   25 / 300 ms
  (64,2,9,9,81)    C=24     9    1.0    1.3 / 3.1 ms, 26 MiB  44 / 101 ms, 169 MiB  78 / 958 ms
  (64,4,7,7,25)    C=16     5    2.0    0.6 / 1.4 ms, 16 MiB  3.7 / 10 ms, 84 MiB   20 / 290 ms
  (64,4,7,7,49)    C=16     7    1.0    0.8 / 2.0 ms, 27 MiB  23 / 51 ms, 81 MiB    38 / 567 ms
  (64,2,14,14,81)  C=24     9    2.4    7.3 / 17 ms, 109 MiB  102 / 228 ms, 403 MiB
  (8,2,20,20,49)   C=24     7    8.2    3.6 / 7.6 ms, 50 MiB  5.1 / 14 ms, 84 MiB
  (8,2,28,28,49)   C=24     7   16.0    44 / 75 ms, 78 MiB    32 / 71 ms, 111 MiB
  (8,2,28,28,25)   C=24     5   31.4    41 / 70 ms, 78 MiB    5.1 / 15 ms, 61 MiB
  (8,2,56,56,49)   C=24     7   64.0    628 / 1057 ms, 1.1 GiB  117 / 266 ms, 451 MiB  226 / 2785 ms

The first four rows are OverLoCK-XT at batch 64 (stage 3 at 9x9 with K=5 and 9, stage 4 at 7x7
with K=5 and 7). Looping over the K*K offsets instead was 3-14x slower than dense there, with
more memory. Dense and gather tie near H*W = 16 K^2, hence DENSE_MAX_RATIO.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .na2d_common import check_na2d_args

BACKENDS = ("auto", "natten", "native")
ENV_VAR = "OVERLOCK_NA2D"
# Native form choice: dense matmul while H*W <= DENSE_MAX_RATIO * K0*K1, else gather.
DENSE_MAX_RATIO = 16

_requested: str | None = None  # set_na2d_backend(); None: read ENV_VAR
_resolved: str | None = None  # "natten" or "native", fixed at first use
_natten_fn: Callable[..., Tensor] | None = None  # natten.functional.na2d_av once resolved
_about = ""  # NATTEN's version, or why it is not used
_reported = False


def _load_natten() -> tuple[Callable[..., Tensor] | None, str]:
    """NATTEN's na2d_av, or None, plus a description (version, or why it is unusable)."""
    try:
        import natten
        from natten.functional import na2d_av as natten_na2d_av
    except Exception as exc:  # a broken build fails in many ways; auto must still fall back
        return None, f"NATTEN not importable ({type(exc).__name__}: {exc})"
    version = str(getattr(natten, "__version__", "0"))
    numbers = tuple(int(p) for p in version.split("+")[0].split(".")[:2] if p.isdigit())
    if numbers >= (0, 20):
        return None, f"NATTEN {version} has no na2d_av (removed in 0.20)"
    return natten_na2d_av, f"NATTEN {version}"


def set_na2d_backend(name: str | None) -> None:
    """Force the backend of :func:`na2d_av` from now on.

    Args:
        name: ``"auto"`` (NATTEN if usable, else native), ``"natten"``, ``"native"``, or None
            to follow the ``OVERLOCK_NA2D`` environment variable again.

    Raises:
        ValueError: unknown name.
        RuntimeError: ``"natten"`` while NATTEN < 0.20 cannot be imported.
    """
    global _requested, _resolved, _reported
    if name is not None and name not in BACKENDS:
        raise ValueError(f"na2d backend must be one of {BACKENDS} or None, got {name!r}")
    _requested, _resolved, _reported = name, None, False
    if name is not None:
        na2d_backend()  # fail now, not at the first forward pass


def na2d_backend() -> str:
    """The backend :func:`na2d_av` uses: ``"natten"`` or ``"native"``.

    Raises:
        ValueError: ``OVERLOCK_NA2D`` holds an unknown name.
        RuntimeError: ``natten`` was forced but NATTEN < 0.20 cannot be imported.
    """
    global _resolved, _natten_fn, _about
    if _resolved is None:
        wanted = _requested or os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
        if wanted not in BACKENDS:
            raise ValueError(f"{ENV_VAR} must be one of {BACKENDS}, got {wanted!r}")
        _natten_fn, _about = _load_natten()
        if wanted == "natten" and _natten_fn is None:
            raise RuntimeError(
                f"na2d backend 'natten' was forced ({ENV_VAR} or set_na2d_backend) but "
                f"{_about}; install NATTEN 0.17.x (requirements-natten.txt) or use auto/native"
            )
        _resolved = "natten" if wanted != "native" and _natten_fn is not None else "native"
    return _resolved


def _report_backend() -> None:
    """Print the backend once, so logs show which implementation produced a run."""
    global _reported
    if not _reported:
        how = "NATTEN's kernel" if na2d_backend() == "natten" else "the native PyTorch op"
        print(f"[na2d] na2d_av uses {how} ({_about})", file=sys.stderr)
        _reported = True


def na2d_av(
    attn: Tensor,
    value: Tensor,
    kernel_size: int | Sequence[int],
    dilation: int | Sequence[int] = 1,
) -> Tensor:
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
    if _traced_backend() == "natten":
        # NATTEN's CPU kernel assumes attn's last stride is 1.
        return _natten_fn(attn.to(value.dtype).contiguous(), value, ks, dil)
    return na2d_av_native(attn, value, ks, dil)


@torch.compiler.assume_constant_result
def _traced_backend() -> str:
    """:func:`na2d_backend`, reported once; torch.compile runs it while tracing (it imports
    NATTEN and prints) and keeps its answer as a constant of the compiled graph."""
    _report_backend()
    return na2d_backend()


def na2d_av_native(
    attn: Tensor, value: Tensor, kernel_size: tuple[int, int], dilation: tuple[int, int]
) -> Tensor:
    """The native op of :func:`na2d_av`, arguments already checked (kernel size and dilation as
    (height, width) pairs). Tensor operations only, so TorchScript, FX and torch.compile trace
    it: the neighbour table is index arithmetic, not numpy."""
    attn = attn.to(value.dtype)
    B, G, H, W, C = value.shape
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        table = neighbour_index(H, W, kernel_size, dilation, value.device)
    else:  # eager: once per shape (the arithmetic costs ~0.15 ms a call)
        table = _cached_neighbour_index(H, W, kernel_size, dilation, value.device)
    attn = attn.reshape(B, G, H * W, kernel_size[0] * kernel_size[1])
    value = value.reshape(B, G, H * W, C)
    if _dense_is_faster(H * W, kernel_size[0] * kernel_size[1]):
        out = _av_dense(attn, value, table)
    else:
        out = _av_gather(attn, value, table)
    return out.reshape(B, G, H, W, C)


def axis_neighbour_index(
    length: int, kernel_size: int, dilation: int, device: torch.device
) -> Tensor:
    """:func:`models.na2d_common.axis_neighbours` as tensor arithmetic: (length, K) int64."""
    index = torch.arange(length, device=device)
    group = index % dilation
    group_len = (length - group + dilation - 1) // dilation
    centred = index // dilation - kernel_size // 2
    start = torch.minimum(centred.clamp(min=0), group_len - kernel_size) * dilation + group
    return start[:, None] + torch.arange(kernel_size, device=device)[None, :] * dilation


def neighbour_index(
    height: int,
    width: int,
    kernel_size: tuple[int, int],
    dilation: tuple[int, int],
    device: torch.device,
) -> Tensor:
    """:func:`models.na2d_common.neighbour_table` as an int64 tensor on ``device``, computed
    with tensor operations (equal to the numpy table: tests/models/test_na2d.py)."""
    rows = axis_neighbour_index(height, kernel_size[0], dilation[0], device)  # (H, K0)
    cols = axis_neighbour_index(width, kernel_size[1], dilation[1], device)  # (W, K1)
    table = rows[:, None, :, None] * width + cols[None, :, None, :]  # (H, W, K0, K1)
    return table.reshape(height * width, kernel_size[0] * kernel_size[1])


_cached_neighbour_index = functools.lru_cache(maxsize=256)(neighbour_index)


def _dense_is_faster(pixels: int, window: int) -> bool:
    """The native form for a map of ``pixels`` queries and windows of ``window`` pixels."""
    if torch.jit.is_scripting():
        return pixels <= 16 * window  # DENSE_MAX_RATIO: TorchScript reads no module globals
    return pixels <= DENSE_MAX_RATIO * window


def _av_dense(attn: Tensor, value: Tensor, table: Tensor) -> Tensor:
    """attn (B, G, N, KK), value (B, G, N, C) -> (B, G, N, C) via an (N, N) weight matrix."""
    B, G, N, KK = attn.shape
    # A window never holds a pixel twice, so scatter places every weight (no overwrite).
    weights = attn.new_zeros(B, G, N, N).scatter(3, table.expand(B, G, N, KK), attn)
    return weights @ value


def _av_gather(attn: Tensor, value: Tensor, table: Tensor) -> Tensor:
    """attn (B, G, N, KK), value (B, G, N, C) -> (B, G, N, C) via gathered neighbours."""
    return torch.einsum("bgnk,bgnkc->bgnc", attn, value[:, :, table])


__all__ = [
    "BACKENDS",
    "DENSE_MAX_RATIO",
    "ENV_VAR",
    "axis_neighbour_index",
    "na2d_av",
    "na2d_av_native",
    "na2d_backend",
    "neighbour_index",
    "set_na2d_backend",
]
