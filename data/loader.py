"""Deterministic batches of numpy arrays, with optional worker processes and a RAM cache.

The loader owns the I/O: decoding (through the dataset's ``load`` or ``data.images``), the
worker processes and the cache; the randomness comes from the named streams of
``data.streams`` (order, flips) and the augmentations of ``data.augment`` are pure transforms it
calls. Everything random derives from ``(seed, epoch, index)``, so two processes, two frameworks
and a run resumed at any epoch/batch see bit-identical batches::

    order(e)     = stable argsort of h(seed, e, ORDER, i) over i = 0..n-1   (training; val: 0..n-1)
    flip(e, i)   = top bit of h(seed, e, FLIP, i), i = dataset index          (training only)

Batch b of epoch e holds ``order(e)[b * batch_size : (b + 1) * batch_size]``. The last partial
batch is kept unless ``drop_last`` (TinyImageNet-20: 10,000 / 64 -> 156 full batches + one of
16 = 157 batches). With ``world_size > 1`` each global batch is split into contiguous shards
(``np.array_split``: rank r takes the r-th part; sizes differ by at most one), and every rank
yields the same number of batches (a shard is empty only if the last partial batch has fewer
images than ranks; ``drop_last=True`` avoids uneven last batches in data-parallel training).

Each batch: decode + resize (``dataset.load``), flip the flagged images left-right,
uint8 HWC -> CHW (in a worker if any), then ``normalize`` -> float32 N x 3 x H x W (in the
calling process: uint8 is 4x cheaper to pass between processes) and int64 labels.

Undecodable files are replaced by a mean-colour image (normalises to ~0), warned about once
(a one-line ``DataWarning`` naming the scripts' ``--strict-data``), and listed in
``BatchLoader.corrupt_files``; ``strict=True`` (``--strict-data``) raises ``CorruptImageError``.

Training augmentation (``augment=data.augment.Augment(...)``, the official ImageNet recipe; off by
default, and then nothing above changes): in the worker, the random resized crop + flip +
RandAugment per image (instead of resize + flip) on the decoded original, and mixup/cutmix over
the shard (uint8); in the calling process, normalisation and random erasing. The mixing of
batch b on rank r is keyed by ``b * world_size + r``, so a run must keep its world size to see
the same batches. Batches then carry float32 N x C soft targets when mixing or label smoothing
is on. The RAM cache holds resized images, so it cannot serve the random crops (which need the
decoded original): ``cache=True`` with ``random_resized_crop`` is refused; the other
augmentations work from the cache.

``python -m data.bench --help`` measures the loader's throughput.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import multiprocessing as mp
import signal
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from data.augment import Augment
from data.images import MEAN_RGB_UINT8, CorruptImageError, DataWarning, decode_rgb, normalize
from data.streams import epoch_order, flip_flags

if TYPE_CHECKING:
    from data.datasets import Dataset


def decode_rows(
    decode: Callable[[int], np.ndarray], indices: np.ndarray, size: int, strict: bool = False
) -> tuple[np.ndarray, list[str]]:
    """``decode(index)`` (size x size x 3 uint8) for each of ``indices``: (uint8 N x size x
    size x 3, undecodable paths). An undecodable image becomes the mean colour, or with
    ``strict`` its ``CorruptImageError`` propagates.
    """
    hwc = np.empty((len(indices), size, size, 3), dtype=np.uint8)
    corrupt = []
    for row, index in enumerate(indices):
        try:
            hwc[row] = decode(int(index))
        except CorruptImageError as exc:
            if strict:
                raise
            corrupt.append(exc.path)
            hwc[row] = MEAN_RGB_UINT8
    return hwc, corrupt


def load_batch(
    dataset: Dataset, indices: np.ndarray, flips: np.ndarray, strict: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Decode ``indices``, flip where ``flips``: (uint8 N x 3 x H x W, undecodable paths)."""
    hwc, corrupt = decode_rows(dataset.load, indices, dataset.img_size, strict)
    hwc[flips] = hwc[flips, :, ::-1]
    return np.ascontiguousarray(hwc.transpose(0, 3, 1, 2)), corrupt


def load_augmented_batch(
    dataset: Dataset,
    augment: Augment,
    indices: np.ndarray,
    flips: np.ndarray,
    seed: int,
    epoch: int,
    mix_index: int,
    strict: bool = False,
    cache: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """The uint8 part of an augmented training shard (runs in a worker): images N x 3 x S x S
    (transformed, mixed), soft targets or None, undecodable paths. ``mix_index`` =
    batch * world_size + rank seeds the mixing; ``cache`` = the loader's decoded split.
    """
    corrupt: list[str] = []
    if augment.random_resized_crop:
        transform = augment.train_transform(dataset.img_size)
        hwc, corrupt = decode_rows(
            lambda index: transform(decode_rgb(dataset.paths[index]), seed, epoch, index),
            indices,
            dataset.img_size,
            strict,
        )
        images = np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))
    elif cache is not None:
        images = cache[indices]
        images[flips] = images[flips, :, :, ::-1]
    else:
        images, corrupt = load_batch(dataset, indices, flips, strict)
    labels = dataset.labels[indices]
    images, targets = augment.mix_shard(images, labels, dataset.num_classes, seed, epoch, mix_index)
    return images, targets, corrupt


# --- worker processes: each holds the dataset once (set by the pool initializer) ------------
_worker_dataset: Dataset | None = None
_worker_strict = False
_worker_augment: Augment | None = None


def _worker_init(dataset: Dataset, strict: bool, augment: Augment | None) -> None:
    global _worker_dataset, _worker_strict, _worker_augment
    # Ctrl-C (and a job scheduler's SIGTERM) reaches the whole process group: only the main
    # process handles it (it finishes the step, saves, shuts the pool down); a worker dying of
    # it mid-task would turn a clean stop into BrokenProcessPool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _worker_dataset, _worker_strict, _worker_augment = dataset, strict, augment


def _worker_batch(indices: np.ndarray, flips: np.ndarray) -> tuple[np.ndarray, list[str]]:
    # Returns uint8: 4x less to pickle through the pipe than float32; the parent normalises.
    assert _worker_dataset is not None, "worker not initialised"
    return load_batch(_worker_dataset, indices, flips, _worker_strict)


def _worker_augmented_batch(
    indices: np.ndarray, flips: np.ndarray, seed: int, epoch: int, mix_index: int
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    assert _worker_dataset is not None and _worker_augment is not None, "worker not initialised"
    return load_augmented_batch(
        _worker_dataset, _worker_augment, indices, flips, seed, epoch, mix_index, _worker_strict
    )


class BatchLoader:
    """Deterministic numpy batches of a ``TinyImageNet`` or ``ImageNet`` split (module docstring).

    Args:
        dataset: the split to serve.
        batch_size: global batch size (before sharding).
        seed: with the epoch, fixes the order and the flips.
        train: shuffle + random flip; ``None`` = ``dataset.train``. Otherwise fixed order.
        drop_last: drop the last partial batch (default: keep it).
        rank, world_size: serve only shard ``rank`` of each global batch.
        num_workers: worker processes that decode batches ahead (0 = in this process).
        prefetch: batches in flight with workers (default ``2 * num_workers``).
        cache: decode the split once into RAM (uint8 N x 3 x S x S: 123 MB for
            TinyImageNet-20 at 64 px, 1.2 GB for all 200 classes; workers help fill it), then
            serve batches from memory in this process; workers are stopped after the fill.
        strict: raise on an undecodable image instead of substituting it.
        mp_context: worker start method; ``"fork"`` (as PyTorch's DataLoader on Linux) starts
            fast and does not re-import the training script; ``"spawn"``/``"forkserver"`` do.
        augment: training augmentations (``data.augment.Augment``; training loaders only);
            ``None`` or all off: the plain resize + flip path.

    Use as a context manager (or call ``close``) so workers stop even on an exception.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 64,
        *,
        seed: int = 0,
        train: bool | None = None,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        prefetch: int | None = None,
        cache: bool = False,
        strict: bool = False,
        mp_context: str = "fork",
        augment: Augment | None = None,
    ) -> None:
        if batch_size < 1 or num_workers < 0 or not 0 <= rank < world_size:
            raise ValueError(
                f"bad loader settings: batch_size={batch_size}, num_workers={num_workers}, "
                f"rank={rank}, world_size={world_size}"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.train = dataset.train if train is None else train
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.num_workers = num_workers
        self.prefetch = max(1, 2 * num_workers if prefetch is None else prefetch)
        self.strict = strict
        self._mp_context = mp_context
        self._corrupt: dict[str, None] = {}  # insertion-ordered set
        self._pool: cf.ProcessPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None
        self.augment = augment if augment is not None and augment.enabled else None
        if self.augment is not None and not self.train:
            raise ValueError("augment applies to training loaders only (train=True)")
        if self.augment is not None and self.augment.random_resized_crop and cache:
            raise ValueError(
                "cache=True cannot serve random resized crops (they need the "
                "decoded originals); use workers instead"
            )
        self._cache: np.ndarray | None = None
        if cache:
            self._fill_cache()

    # --- deterministic plan ----------------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def batch_plan(self, epoch: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """(dataset indices, flip flags) of this rank's shard of batch ``batch`` in ``epoch``."""
        if not 0 <= batch < len(self):
            raise IndexError(f"batch {batch} out of range: an epoch has {len(self)} batches")
        return next(self._plans(epoch, batch))

    def _plans(self, epoch: int, start_batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not 0 <= start_batch <= len(self):
            raise IndexError(f"start_batch {start_batch} out of range 0..{len(self)}")
        n = len(self.dataset)
        order = epoch_order(n, self.seed, epoch) if self.train else np.arange(n)
        flips_all = flip_flags(np.arange(n), self.seed, epoch) if self.train else np.zeros(n, bool)
        for b in range(start_batch, len(self)):
            indices = order[b * self.batch_size : (b + 1) * self.batch_size]
            indices = np.array_split(indices, self.world_size)[self.rank].astype(np.int64)
            yield indices, flips_all[indices]

    # --- serving -----------------------------------------------------------------------------
    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(images float32 N x 3 x H x W, labels int64 N)`` for batches
        ``start_batch, ..., len(self) - 1`` of ``epoch``; identical wherever and whenever run.
        With ``augment`` mixing or smoothing, labels are float32 N x C soft targets.
        """
        labels = self.dataset.labels
        plans = self._plans(epoch, start_batch)
        if self.augment is not None:
            yield from self._augmented(epoch, start_batch, plans)
        elif self._cache is not None:
            for indices, flips in plans:
                images = self._cache[indices]
                images[flips] = images[flips, :, :, ::-1]
                yield normalize(images), labels[indices]
        elif self.num_workers == 0:
            for indices, flips in plans:
                images, corrupt = load_batch(self.dataset, indices, flips, self.strict)
                self._report(corrupt)
                yield normalize(images), labels[indices]
        else:
            yield from self._pooled(_worker_batch, plans, self._collect)

    def _pooled(
        self, work: Callable, jobs: Iterator[tuple], finish: Callable
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Each job's first item is the batch's dataset indices; finish(indices, *result).
        pool = self._get_pool()
        pending: collections.deque[tuple[cf.Future, np.ndarray]] = collections.deque()
        try:
            for job in jobs:  # keep `prefetch` batches in flight, in order
                pending.append((pool.submit(work, *job), job[0]))
                if len(pending) >= self.prefetch:
                    future, indices = pending.popleft()
                    yield finish(indices, *future.result())
            while pending:
                future, indices = pending.popleft()
                yield finish(indices, *future.result())
        finally:  # generator closed early, exception or Ctrl-C: drop what is still queued
            for future, _ in pending:
                future.cancel()

    def _collect(
        self, indices: np.ndarray, images: np.ndarray, corrupt: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        self._report(corrupt)
        return normalize(images), self.dataset.labels[indices]

    def _augmented(
        self, epoch: int, start_batch: int, plans: Iterator[tuple[np.ndarray, np.ndarray]]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        augment = self.augment
        assert augment is not None
        jobs = (
            (indices, flips, self.seed, epoch, b * self.world_size + self.rank)
            for b, (indices, flips) in enumerate(plans, start_batch)
        )

        def finish(
            indices: np.ndarray, images: np.ndarray, targets: np.ndarray | None, corrupt: list[str]
        ) -> tuple[np.ndarray, np.ndarray]:
            self._report(corrupt)
            images = augment.erase(normalize(images), indices, self.seed, epoch)
            return images, self.dataset.labels[indices] if targets is None else targets

        if self.num_workers == 0 or self._cache is not None:
            for job in jobs:
                part = load_augmented_batch(self.dataset, augment, *job, self.strict, self._cache)
                yield finish(job[0], *part)
        else:
            yield from self._pooled(_worker_augmented_batch, jobs, finish)

    def _fill_cache(self) -> None:
        n, s = len(self.dataset), self.dataset.img_size
        self._cache = np.empty((n, 3, s, s), dtype=np.uint8)
        chunks = np.array_split(np.arange(n), max(1, -(-n // 256)))
        no_flip = [np.zeros(len(c), bool) for c in chunks]
        try:
            if self.num_workers == 0:
                results = (
                    load_batch(self.dataset, c, f, self.strict)
                    for c, f in zip(chunks, no_flip, strict=True)
                )
            else:
                results = self._get_pool().map(_worker_batch, chunks, no_flip)
            for chunk, (images, corrupt) in zip(chunks, results, strict=True):
                self._cache[chunk] = images
                self._report(corrupt)
        finally:
            self.close()  # batches are served from RAM from now on; workers are not needed

    def _get_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                self.num_workers,
                mp_context=mp.get_context(self._mp_context),
                initializer=_worker_init,
                initargs=(self.dataset, self.strict, self.augment),
            )
            # Also stop the workers if the loader is garbage-collected without close().
            self._finalizer = weakref.finalize(self, _shutdown, self._pool)
        return self._pool

    def _report(self, corrupt: list[str]) -> None:
        for path in corrupt:
            if path not in self._corrupt:
                self._corrupt[path] = None
                warnings.warn(
                    f"undecodable image {path} replaced by a mean-colour image "
                    "(--strict-data stops instead)",
                    DataWarning,
                    stacklevel=2,
                )

    @property
    def corrupt_files(self) -> list[str]:
        """Undecodable files met so far (substituted, in the order found)."""
        return list(self._corrupt)

    @property
    def cached(self) -> bool:
        """True if batches are served from the in-memory cache."""
        return self._cache is not None

    def close(self) -> None:
        """Stop the worker processes (waits for at most the batches already being decoded)."""
        if self._finalizer is not None:
            self._finalizer()  # runs _shutdown once
        self._pool = self._finalizer = None

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _shutdown(pool: cf.ProcessPoolExecutor) -> None:
    pool.shutdown(wait=True, cancel_futures=True)
