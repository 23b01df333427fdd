"""Where a Jittor training step or evaluation spends its time, by kind of kernel.

On the CPU: runs the chosen work (a training step, or an evaluation of the standard or the
deploy form) a few times to compile and warm up, then ``--runs`` times under Jittor's profiler,
and prints the kernel time per run grouped by kind (oneDNN convolutions, the project's ``jt.code``
kernels by name, Jittor's generated element-wise and reduction loops, copies), the number of
launches and the wall time. The numbers in docs/performance.md come from this script. From the
repository root: ``make profile WORK=eval`` or ``.venv/bin/python -m tools.profile_jittor``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from backends.jittor_backend import JittorBackend
from core.cli import main_guard
from core.errors import UsageError
from core.jittor_env import jt
from models.variants import NAMES

# Jittor's own kernels, by the first match in their profiler key.
JITTOR_GROUPS = [
    ("oneDNN conv", "mkl_conv"),
    ("oneDNN matmul", "mkl_matmul"),
    ("Jittor copies", r"^(getitem|setitem|transpose|reindex|concat|copy)"),
    ("Jittor fused reductions", "reduce"),
    ("Jittor element-wise", "."),
]
# The project's jt.code kernels: the key holds the kernel's source.
KERNEL_MODULES = (
    "contmix_jittor",
    "na2d_jittor",
    "depthwise_jittor",
    "fused_jittor",
    "matmul_jittor",
)


def kernel_sources() -> list[tuple[str, str]]:
    """(group, source) of every jt.code kernel of the models, e.g. ('fused bn_backward', ...)."""
    sources = []
    for module_name in KERNEL_MODULES:
        module = importlib.import_module(f"models.{module_name}")
        for name, value in vars(module).items():
            if isinstance(value, str) and name.endswith(("FORWARD", "BACKWARD")):
                group = f"{module_name.removesuffix('_jittor')} {name.strip('_').lower()}"
                sources.append((group, value.strip()))
    return sources


def group_of(key: str, sources: list[tuple[str, str]]) -> str:
    """The group of one kernel's profiler key: its source's name, or the kind of Jittor op."""
    if key.startswith("code"):
        return next((group for group, source in sources if source in key), "other jt.code")
    return next(name for name, pattern in JITTOR_GROUPS if re.search(pattern, key))


def profile(work: Callable[[], object], runs: int) -> tuple[dict, float]:
    """Kernel ms and launches per group, and the wall ms of one run, from ``runs`` runs."""
    jt.profiler.start(0, 0)
    start = time.perf_counter()
    for _ in range(runs):
        work()
    wall = (time.perf_counter() - start) * 1e3 / runs
    jt.profiler.stop()
    rows = jt.profiler.report()
    header, body = rows[0], rows[1:]
    name_col, total_col, count_col = (header.index(c) for c in ("Name", "TotalTime", "Count"))
    totals: dict = defaultdict(lambda: [0.0, 0])
    sources = kernel_sources()
    for row in body:
        group = totals[group_of(str(row[name_col]), sources)]
        group[0] += float(row[total_col]) / 1e6 / runs  # ns -> ms
        group[1] += int(row[count_col]) // runs
    return dict(totals), wall


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda: _profile(argv))


def _profile(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", choices=("step", "eval", "deploy-eval"), default="step")
    parser.add_argument("--model", default="xxt", choices=NAMES)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="profiled runs (averaged)")
    parser.add_argument("--top", type=int, default=0, help="also list the N slowest kernels")
    args = parser.parse_args(argv)
    for flag in ("batch_size", "num_classes", "runs"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.img_size < 32 or args.img_size % 32:
        raise UsageError("--img-size must be a multiple of 32 (OverLoCK downsamples by 32)")
    if args.warmup < 0 or args.top < 0:
        raise UsageError("--warmup and --top must be >= 0")
    rng = np.random.default_rng(0)
    backend = JittorBackend("cpu")
    backend.build(f"overlock_{args.model}", args.num_classes, seed=0)
    shape = (args.batch_size, 3, args.img_size, args.img_size)
    images = rng.standard_normal(shape).astype(np.float32)
    labels = rng.integers(0, args.num_classes, args.batch_size)
    if args.work == "step":
        work = lambda: backend.train_step(images, labels)  # noqa: E731
    else:
        state = backend.model_state()
        backend.load(state, f"overlock_{args.model}", args.num_classes, args.work == "deploy-eval")
        work = lambda: backend.eval_logits(images)  # noqa: E731
    for _ in range(args.warmup):
        work()
    totals, wall = profile(work, args.runs)
    kernel_ms = sum(ms for ms, _ in totals.values())
    print(
        f"{args.work} {args.model} b{args.batch_size} {args.img_size}px: wall {wall:.1f} ms, "
        f"kernels {kernel_ms:.1f} ms in {sum(n for _, n in totals.values())} launches"
    )
    for name, (ms, count) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        print(f"  {name:26s} {ms:8.1f} ms {count:6d}")
    if args.top:
        print_top(args.top, args.runs)


def print_top(n: int, runs: int) -> None:
    """The ``n`` slowest kernels of the last profile: ms per run, group, start of the key."""
    rows = jt.profiler.report()
    header, body = rows[0], rows[1:]
    name_col, total_col = header.index("Name"), header.index("TotalTime")
    body.sort(key=lambda r: -float(r[total_col]))
    sources = kernel_sources()
    for row in body[:n]:
        key = str(row[name_col])
        ms, start = float(row[total_col]) / 1e6 / runs, re.sub(r"\s+", " ", key)[:100]
        print(f"  {ms:7.2f} ms  {group_of(key, sources):26s} {start}")


if __name__ == "__main__":
    raise SystemExit(main())
