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

from analysis.inputs import check_img_size
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


def profile(
    work: Callable[[], object], runs: int
) -> tuple[list[tuple[str, str, float, int]], float]:
    """Every kernel as (group, key, ms, launches) per run, and the wall ms of one run, from
    ``runs`` runs under the profiler."""
    jt.profiler.start(0, 0)
    start = time.perf_counter()
    for _ in range(runs):
        work()
    wall = (time.perf_counter() - start) * 1e3 / runs
    jt.profiler.stop()
    rows = jt.profiler.report()
    header, body = rows[0], rows[1:]
    name_col, total_col, count_col = (header.index(c) for c in ("Name", "TotalTime", "Count"))
    sources = kernel_sources()
    kernels = []
    for row in body:
        key = str(row[name_col])
        ms = float(row[total_col]) / 1e6 / runs  # ns -> ms
        kernels.append((group_of(key, sources), key, ms, int(row[count_col]) // runs))
    return kernels, wall


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
    check_img_size(args.img_size)
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
    kernels, wall = profile(work, args.runs)
    totals: dict = defaultdict(lambda: [0.0, 0])
    for group, _, ms, count in kernels:
        totals[group][0] += ms
        totals[group][1] += count
    print(
        f"{args.work} {args.model} b{args.batch_size} {args.img_size}px: wall {wall:.1f} ms, "
        f"kernels {sum(ms for _, _, ms, _ in kernels):.1f} ms in "
        f"{sum(count for *_, count in kernels)} launches"
    )
    for name, (ms, count) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        print(f"  {name:26s} {ms:8.1f} ms {count:6d}")
    for group, key, ms, _ in sorted(kernels, key=lambda k: -k[2])[: args.top]:
        start = re.sub(r"\s+", " ", key)[:100]
        print(f"  {ms:7.2f} ms  {group:26s} {start}")


if __name__ == "__main__":
    raise SystemExit(main())
