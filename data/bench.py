"""``python -m data.bench --data-dir DIR``: batches/s of ``BatchLoader`` alone (no model)."""

from __future__ import annotations

import time
from pathlib import Path

from core.cli import ArgumentParser
from data.loader import BatchLoader
from data.tinyimagenet import TinyImageNet


def bench(loader: BatchLoader, batches: int) -> tuple[float, float]:
    """(batches/s, CPU ms per batch spent in this process) over ``batches`` batches of epoch 0.

    The first batch pays worker start-up and is not timed. The CPU time is what the loader
    takes from the training process itself (with workers, most of the work is elsewhere).
    """
    it = loader.batches(epoch=0)
    next(it)
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    for done, _ in enumerate(it, 1):
        if done == batches:
            break
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return done / wall, 1000 * cpu / done


def main(argv: list[str] | None = None) -> None:
    """Measure each configuration in turn and print one line per configuration."""
    parser = ArgumentParser(prog="python -m data.bench", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="TinyImageNet folder")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--size", type=int, default=64, help="image side after resize")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=150, help="timed batches per config")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache-workers", type=int, default=2, help="workers filling the cache")
    args = parser.parse_args(argv)

    dataset = TinyImageNet(args.data_dir, "train", args.classes, img_size=args.size)
    print(f"{dataset}; batch {args.batch_size}; {args.batches} timed batches per configuration")
    configs = [(f"{w} workers", {"num_workers": w}) for w in args.workers]
    configs.append(
        (
            f"cache ({args.cache_workers} fill workers)",
            {"cache": True, "num_workers": args.cache_workers},
        )
    )
    for name, kwargs in configs:
        t0 = time.perf_counter()
        with BatchLoader(dataset, args.batch_size, seed=0, **kwargs) as loader:
            setup = time.perf_counter() - t0
            rate, cpu_ms = bench(loader, args.batches)
        print(
            f"{name:>24}: {rate:7.1f} batches/s, {cpu_ms:5.2f} ms CPU/batch in the main process"
            f" (setup {setup:.2f}s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
