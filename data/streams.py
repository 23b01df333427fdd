"""Every random stream of training, named in one table, and the counter hash they come from.

Everything random derives from ``(seed, epoch, index)`` through a counter-based hash
(SplitMix64), never from hidden generator state, so two processes, two frameworks and a run
resumed at any epoch/batch see bit-identical batches. The hash is plain uint64 arithmetic,
independent of the numpy version (unlike ``Generator.permutation``)::

    sm(x)         = SplitMix64 output for state x  (x += 0x9E3779B97F4A7C15, then the finaliser)
    h(s, e, t, i) = sm(sm(sm(sm(s) ^ t) + e) + i)        all mod 2**64; t: the stream id below

The streams (``Stream``; the ids are frozen: changing one changes every batch and every
committed log):

    1 ORDER         per dataset index: the epoch's shuffle (stable argsort of h over i)
    2 FLIP          per dataset index: the plain path's left-right flip (top bit of h)
    3 TRANSFORM     per dataset index: ``random.Random`` of the random resized crop, its
                    interpolation, the flip and RandAugment's probabilities/magnitudes/signs
    4 CHOICE        per dataset index: ``numpy.random.RandomState`` of RandAugment's op choice
    5 ERASE         per dataset index: ``random.Random`` of the random-erasing box
    6 ERASE_PIXELS  per dataset index: ``RandomState`` of the erased pixels (normal noise)
    7 MIX           per (batch * world_size + rank): ``RandomState`` of mixup/cutmix
    8 STEP          per batch: the framework RNG seed of a training step (drop path)

``stream_key`` is one hash value as an int; ``py_rng`` / ``np_rng`` seed the two generator types
with it (both are stable across Python/numpy versions: ``random.Random`` seeding by int and
numpy's legacy ``RandomState`` stream are frozen).
"""

from __future__ import annotations

import enum
import random

import numpy as np

_M64 = (1 << 64) - 1


class Stream(enum.IntEnum):
    """The stream ids of ``counter_hash`` (module docstring)."""

    ORDER = 1
    FLIP = 2
    TRANSFORM = 3
    CHOICE = 4
    ERASE = 5
    ERASE_PIXELS = 6
    MIX = 7
    STEP = 8


def _sm_int(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _sm_array(x: np.ndarray) -> np.ndarray:
    # uint64 array arithmetic wraps mod 2**64 silently, exactly like _sm_int.
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def counter_hash(seed: int, epoch: int, stream: int, index: np.ndarray) -> np.ndarray:
    """``h(seed, epoch, stream, index)`` of the module docstring, as uint64 (vectorised)."""
    if not (0 <= seed <= _M64 and 0 <= epoch <= _M64):
        raise ValueError(f"seed and epoch must be in [0, 2**64), got {seed}, {epoch}")
    key = _sm_int((_sm_int(_sm_int(seed) ^ int(stream)) + epoch) & _M64)
    return _sm_array(np.asarray(index, dtype=np.uint64) + np.uint64(key))


def stream_key(seed: int, epoch: int, stream: Stream, index: int) -> int:
    """One value of ``counter_hash`` as a Python int (a generator seed)."""
    return int(counter_hash(seed, epoch, stream, np.array([index], dtype=np.uint64))[0])


def py_rng(seed: int, epoch: int, stream: Stream, index: int) -> random.Random:
    """``random.Random`` seeded with ``stream_key(seed, epoch, stream, index)``."""
    return random.Random(stream_key(seed, epoch, stream, index))


def np_rng(seed: int, epoch: int, stream: Stream, index: int) -> np.random.RandomState:
    """``numpy.random.RandomState`` seeded with the 64-bit key as two 32-bit words."""
    value = stream_key(seed, epoch, stream, index)
    return np.random.RandomState(np.array([value & 0xFFFFFFFF, value >> 32], dtype=np.uint32))


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training permutation of ``range(n)`` for ``epoch`` (int64)."""
    return np.argsort(counter_hash(seed, epoch, Stream.ORDER, np.arange(n)), kind="stable")


def flip_flags(indices: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Whether dataset images ``indices`` are flipped left-right in ``epoch`` (bool array)."""
    return (counter_hash(seed, epoch, Stream.FLIP, indices) >> np.uint64(63)).astype(bool)


def step_seed(seed: int, epoch: int, batch: int) -> int:
    """A 63-bit seed for the framework RNG of training step ``batch`` of ``epoch`` (stream 8)."""
    return int(counter_hash(seed, epoch, Stream.STEP, np.array([batch]))[0] >> np.uint64(1))
