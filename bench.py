"""Benchmark Jittor against PyTorch on the OverLoCK training step, side by side.

For each framework, in a fresh process per round (frameworks alternate, so both see the same
machine state), it measures on one random batch:

- the training step (forward, backward, AdamW: the exact step of train.py / train_torch.py),
- evaluation throughput (main head, no gradients),
- the ``na2d_av`` op alone, forward and forward+backward, on every shape the model uses,
- the process's peak memory (resident set on the CPU; allocator peak on a GPU).

The first steps are warm-up and excluded (Jittor compiles kernels there; that time is reported
separately as ``first_step_s``). Each timing is the median over ``--steps`` repetitions; the
table takes the median over ``--rounds`` rounds. When ``.venv-natten`` exists, NATTEN's own
``na2d_av`` is timed on the same shapes. Results: OUT/bench.csv (every round) and OUT/bench.md
(the summary table), with the Jittor/PyTorch ratios printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.cli import ArgumentParser, HelpFormatter, main_guard
from core.errors import UsageError
from core.files import atomic_write_bytes, check_writable_folder
from models.variants import NAMES

REPO = Path(__file__).resolve().parent
NATTEN_PYTHON = REPO / ".venv-natten" / "bin" / "python"
FRAMEWORKS = ("torch", "jittor")
# metric -> (label, unit, lower is better)
METRICS = {
    "step_ms": ("training step (fwd+bwd+AdamW)", "ms", True),
    "train_images_per_s": ("training throughput", "images/s", False),
    "eval_images_per_s": ("eval throughput", "images/s", False),
    "na2d_fwd_ms": ("na2d_av forward, all model shapes", "ms", True),
    "na2d_fwd_bwd_ms": ("na2d_av forward+backward, all model shapes", "ms", True),
    "peak_mem_mib": ("peak memory", "MiB", True),
    "first_step_s": ("first step (Jittor: kernel compilation)", "s", True),
}


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- worker: one framework in this process ---------------------------------------------------
def _torch_ops(device: str, natten: bool) -> dict[str, Any]:
    import torch

    from models import na2d_torch

    if natten:
        na2d_torch.set_na2d_backend("natten")

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def na2d(attn: np.ndarray, value: np.ndarray, kernel: int, backward: bool) -> Callable:
        a = torch.from_numpy(attn).to(device).requires_grad_(backward)
        v = torch.from_numpy(value).to(device).requires_grad_(backward)

        def run() -> None:
            out = na2d_torch.na2d_av(a, v, kernel_size=kernel)
            if backward:
                torch.autograd.grad(out.sum(), [a, v])
            sync()

        return run

    def peak_mib() -> float:
        if device == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return _peak_rss_mib()

    version = torch.__version__
    if natten:
        import natten as natten_module

        version = f"{natten_module.__version__} (torch {torch.__version__})"
    return {"na2d": na2d, "sync": sync, "peak_mib": peak_mib, "version": version}


def _jittor_ops() -> dict[str, Any]:
    from core.jittor_env import jt
    from models import na2d_jittor

    def na2d(attn: np.ndarray, value: np.ndarray, kernel: int, backward: bool) -> Callable:
        a, v = jt.array(attn), jt.array(value)

        def run() -> None:
            out = na2d_jittor.na2d_av(a, v, kernel_size=kernel)
            if backward:
                # out too: the gradients of a sum do not need it, and lazy Jittor would skip the
                # forward that torch runs eagerly.
                jt.sync([out, *jt.grad(out.sum(), [a, v])])
            else:
                out.sync()

        return run

    def peak_mib() -> float:
        return _peak_rss_mib()  # on a GPU: host memory only (Jittor has no allocator peak API)

    return {"na2d": na2d, "sync": jt.sync_all, "peak_mib": peak_mib, "version": jt.__version__}


def _model_na2d_shapes(framework: str, backend: Any, images: np.ndarray) -> list[list]:
    """(attn shape, value shape, kernel) of every na2d_av call in one forward of the model."""
    if framework == "torch":
        from models import overlock_torch as module
    else:
        from models import overlock_jittor as module
    calls = []
    original = module.na2d_av

    def recording(attn, value, kernel_size, *args, **kwargs):
        calls.append([list(attn.shape), list(value.shape), int(kernel_size)])
        return original(attn, value, kernel_size, *args, **kwargs)

    module.na2d_av = recording
    try:
        backend.eval_logits(images)
    finally:
        module.na2d_av = original
    return calls


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one framework in this process; returns the result row."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch_size, 3, args.img_size, args.img_size))
    images = images.astype(np.float32)
    labels = rng.integers(0, args.num_classes, args.batch_size)
    result: dict[str, Any] = {"framework": args.worker, "device": args.device}
    shapes = json.loads(args.shapes) if args.shapes else None

    if args.worker == "natten":  # NATTEN's op only, in .venv-natten
        ops = _torch_ops(args.device, natten=True)
    else:
        if args.worker == "torch":
            from backends.torch_backend import TorchBackend as Backend
        else:
            from backends.jittor_backend import JittorBackend as Backend
        # First the backend: it configures Jittor for the device before Jittor's first import.
        backend = Backend(args.device, 1e-3, 0.01, 0.4)
        ops = _torch_ops(args.device, natten=False) if args.worker == "torch" else _jittor_ops()
        backend.build(f"overlock_{args.model}", args.num_classes, seed=0)
        t0 = time.perf_counter()
        backend.train_step(images, labels)
        result["first_step_s"] = time.perf_counter() - t0
        for _ in range(args.warmup):
            backend.train_step(images, labels)
        result["step_ms"] = _median_ms(lambda: backend.train_step(images, labels), args.steps)
        result["train_images_per_s"] = 1000 * args.batch_size / result["step_ms"]
        backend.eval_logits(images)  # warm-up (compiles the eval graph)
        eval_ms = _median_ms(lambda: backend.eval_logits(images), args.steps)
        result["eval_images_per_s"] = 1000 * args.batch_size / eval_ms
        result["peak_mem_mib"] = ops["peak_mib"]()  # before the op benchmark adds its own
        shapes = _model_na2d_shapes(args.worker, backend, images)

    assert shapes, "the model made no na2d_av call"
    result["na2d_shapes"] = shapes
    for key, backward in (("na2d_fwd_ms", False), ("na2d_fwd_bwd_ms", True)):
        runs = []
        for attn_shape, value_shape, kernel in shapes:
            attn = rng.random(attn_shape, dtype=np.float32)
            value = rng.standard_normal(value_shape).astype(np.float32)
            runs.append(ops["na2d"](attn, value, kernel, backward))

        def all_shapes(runs: list[Callable] = runs) -> None:
            for run in runs:
                run()

        for _ in range(args.warmup + 1):
            all_shapes()
        result[key] = _median_ms(all_shapes, args.steps)
    result["version"] = ops["version"]
    return result


# --- driver: alternate fresh worker processes, then summarise --------------------------------
def _worker_cmd(python: Path | str, framework: str, args: argparse.Namespace, shapes=None):
    cmd = [str(python), str(REPO / "bench.py"), "--worker", framework]
    cmd += ["--model", args.model, "--batch-size", str(args.batch_size)]
    cmd += ["--img-size", str(args.img_size), "--steps", str(args.steps)]
    cmd += ["--warmup", str(args.warmup), "--device", args.device]
    if shapes is not None:
        cmd += ["--shapes", json.dumps(shapes)]
    return cmd


def _run_worker_process(cmd: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"benchmark worker failed ({' '.join(cmd[2:4])}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median over rounds of each metric, per framework."""
    summary: dict[str, dict[str, float]] = {}
    for framework in sorted({r["framework"] for r in rows}):
        mine = [r for r in rows if r["framework"] == framework]
        summary[framework] = {
            m: statistics.median(r[m] for r in mine) for m in METRICS if m in mine[0]
        }
    return summary


def markdown(summary: dict[str, dict[str, float]], context: str) -> str:
    has_natten = "natten" in summary
    head = "| metric | PyTorch | Jittor | Jittor / PyTorch |" + (" NATTEN |" if has_natten else "")
    lines = [context, "", head, "|" + " --- |" * (5 if has_natten else 4)]
    torch_, jittor = summary.get("torch", {}), summary.get("jittor", {})
    for metric, (label, unit, _) in METRICS.items():
        if metric not in torch_ and metric not in jittor:
            continue
        t, j = torch_.get(metric), jittor.get(metric)
        ratio = f"{j / t:.2f}x" if t and j else ""
        cells = [f"{label} ({unit})", _num(t), _num(j), ratio]
        if has_natten:
            cells.append(_num(summary["natten"].get(metric)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default="xxt", choices=NAMES)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="worker processes per framework")
    parser.add_argument("--steps", type=int, default=10, help="timed repetitions per measure")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument(
        "--no-natten", action="store_true", help="skip NATTEN even if .venv-natten exists"
    )
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "bench")
    parser.add_argument("--worker", choices=(*FRAMEWORKS, "natten"), help=argparse.SUPPRESS)
    parser.add_argument("--shapes", help=argparse.SUPPRESS)
    parser.add_argument("--num-classes", type=int, default=20, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda: _bench(argv))


def _bench(argv: list[str] | None) -> None:
    """Check the arguments and the output folder, then run the rounds and write the results
    (bad arguments: one line, exit 2; a write error names the file, exit 1)."""
    args = build_parser().parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)), flush=True)
        return
    for flag in ("batch_size", "rounds", "steps"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.img_size < 32 or args.img_size % 32:
        raise UsageError("--img-size must be a multiple of 32 (OverLoCK downsamples by 32)")
    if args.warmup < 0:
        raise UsageError("--warmup must be >= 0")
    check_writable_folder(args.out, f"--out {args.out}")
    rows, shapes = _run_rounds(args)
    _report(args, rows, shapes)


def _run_rounds(args: argparse.Namespace) -> tuple[list[dict[str, Any]], Any]:
    """Every round's worker rows (frameworks alternating), and the model's na2d_av shapes."""
    use_natten = NATTEN_PYTHON.is_file() and not args.no_natten and args.device == "cpu"
    rows: list[dict[str, Any]] = []
    shapes = None
    for round_ in range(args.rounds):
        order = args.frameworks if round_ % 2 == 0 else args.frameworks[::-1]
        for framework in order:
            print(f"round {round_ + 1}/{args.rounds}: {framework} ...", flush=True)
            row = _run_worker_process(_worker_cmd(sys.executable, framework, args))
            shapes = row["na2d_shapes"]
            rows.append({"round": round_ + 1, **row})
        if use_natten:
            print(f"round {round_ + 1}/{args.rounds}: natten (na2d_av only) ...", flush=True)
            row = _run_worker_process(_worker_cmd(NATTEN_PYTHON, "natten", args, shapes))
            rows.append({"round": round_ + 1, **row})
    return rows, shapes


def _report(args: argparse.Namespace, rows: list[dict[str, Any]], shapes: Any) -> None:
    """OUT/bench.csv (every round), OUT/bench.md (the summary, also printed) and the ratios."""
    columns = ["round", "framework", "version", "device", *METRICS]
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(_csv_cell(row.get(c)) for c in columns))
    atomic_write_bytes(args.out / "bench.csv", ("\n".join(lines) + "\n").encode())

    summary = summarise(rows)
    versions = {r["framework"]: r["version"] for r in rows}
    context = (
        f"OverLoCK-{args.model.upper()}, batch {args.batch_size}, {args.img_size}x{args.img_size}, "
        f"{args.device} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores); "
        f"median of {args.rounds} rounds x {args.steps} steps; "
        + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
        + f". na2d_av shapes (attn, value, K): {shapes}"
    )
    table = markdown(summary, context)
    atomic_write_bytes(args.out / "bench.md", table.encode())
    print(table)
    torch_, jittor = summary.get("torch", {}), summary.get("jittor", {})
    if torch_ and jittor:
        print(
            f"Jittor/PyTorch: step time {jittor['step_ms'] / torch_['step_ms']:.2f}x, "
            f"eval throughput {jittor['eval_images_per_s'] / torch_['eval_images_per_s']:.2f}x, "
            f"na2d fwd+bwd {jittor['na2d_fwd_bwd_ms'] / torch_['na2d_fwd_bwd_ms']:.2f}x, "
            f"peak memory {jittor['peak_mem_mib'] / torch_['peak_mem_mib']:.2f}x"
        )
    print(f"wrote {args.out / 'bench.csv'} and {args.out / 'bench.md'}")


def _csv_cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


if __name__ == "__main__":
    sys.exit(main())
