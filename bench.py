"""Benchmark Jittor against PyTorch's eager *and* best modes on OverLoCK, in one run.

Peers: PyTorch ``eager``, ``channels_last``, ``compile`` (torch.compile, one static graph per
shape), ``compile_channels_last``, and ``jittor``; each in a fresh process per round, the order
alternating between rounds so that all see the same machine state. Each measures on random
batches: the training step of the standard form (forward, backward, AdamW: the step of train.py /
train_torch.py) at ``--batch-size``; evaluation throughput (main head, no gradients) at each
``--eval-batch-sizes`` for the standard and the reparameterised (deploy) form; peak memory
(resident set on the CPU, allocator peak on a GPU); the eager peers also time the ``na2d_av``
op alone on the model's shapes (and NATTEN's op when ``.venv-natten`` exists). First calls are
warm-up, reported apart (compilation: ``first_step_s``, ``first_eval_s``). Timings are medians
over ``--steps`` calls, the table the median over ``--rounds`` rounds. Results: OUT/bench.csv
(every round), OUT/bench.md (the table); the ratios of Jittor to the best PyTorch peer of each
measure are printed last.
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

from analysis.bench_table import FORMS, PEERS, best_peers, markdown, metrics, summarise
from analysis.inputs import check_img_size
from core.cli import ArgumentParser, HelpFormatter, main_guard
from core.errors import UsageError
from core.files import atomic_write_bytes, check_writable_folder
from models.variants import NAMES

REPO = Path(__file__).resolve().parent
NATTEN_PYTHON = REPO / ".venv-natten" / "bin" / "python"


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    return statistics.median(_seconds(fn) * 1000 for _ in range(repeats))


def _seconds(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- worker: one peer in this process -----------------------------------------------------
def _torch_na2d(device: str, natten: bool) -> tuple[Callable, Callable[[], float], str]:
    import torch

    from models import na2d_torch

    if natten:
        na2d_torch.set_na2d_backend("natten")

    def na2d(attn: np.ndarray, value: np.ndarray, kernel: int, backward: bool) -> Callable:
        a = torch.from_numpy(attn).to(device).requires_grad_(backward)
        v = torch.from_numpy(value).to(device).requires_grad_(backward)

        def run() -> None:
            out = na2d_torch.na2d_av(a, v, kernel_size=kernel)
            if backward:
                torch.autograd.grad(out.sum(), [a, v])
            if device == "cuda":
                torch.cuda.synchronize()

        return run

    def peak_mib() -> float:
        on_gpu = device == "cuda"
        return torch.cuda.max_memory_allocated() / 2**20 if on_gpu else _peak_rss_mib()

    version = torch.__version__
    if natten:
        import natten as natten_module

        version = f"{natten_module.__version__} (torch {version})"
    return na2d, peak_mib, version


def _jittor_na2d() -> tuple[Callable, Callable[[], float], str]:
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

    # On a GPU: host memory only (Jittor has no allocator peak API).
    return na2d, _peak_rss_mib, jt.__version__


def _model_na2d_shapes(framework: str, backend: Any, images: np.ndarray) -> list[list]:
    """(attn shape, value shape, kernel) of every na2d_av in one forward of the model (Jittor's
    twin runs each ContMix's two as one ``contmix_av``)."""
    calls = []
    if framework == "torch":
        from models import overlock_torch as module

        name, original = "na2d_av", module.na2d_av

        def recording(attn, value, kernel_size, *args, **kwargs):
            calls.append([list(attn.shape), list(value.shape), int(kernel_size)])
            return original(attn, value, kernel_size, *args, **kwargs)
    else:
        from models import overlock_jittor as module

        name, original = "contmix_av", module.contmix_av

        def recording(attn_small, attn_large, x, kernel_small, kernel_large):
            B, C, H, W = x.shape
            value = [B, attn_small.shape[1], H, W, C // (2 * attn_small.shape[1])]
            for attn, kernel in ((attn_small, kernel_small), (attn_large, kernel_large)):
                calls.append([list(attn.shape), value, int(kernel)])
            return original(attn_small, attn_large, x, kernel_small, kernel_large)

    setattr(module, name, recording)
    try:
        backend.eval_logits(images)
    finally:
        setattr(module, name, original)
    return calls


def _backend(args: argparse.Namespace) -> Any:
    _, framework, channels_last, compiled = PEERS[args.worker]
    if framework == "torch":
        from backends.torch_backend import TorchBackend

        options = dict(compile_model=compiled, compile_dynamic=False, channels_last=channels_last)
        return TorchBackend(args.device, 1e-3, 0.01, 0.4, **options)
    from backends.jittor_backend import JittorBackend

    return JittorBackend(args.device, 1e-3, 0.01, 0.4)


def _time_model(args: argparse.Namespace, result: dict[str, Any], rng: np.random.Generator) -> Any:
    """The training step, then evaluation of both forms at every batch size, into ``result``."""
    backend = _backend(args)  # before Jittor's first import: it configures the device
    backend.build(f"overlock_{args.model}", args.num_classes, seed=0)
    images = rng.standard_normal((args.batch_size, 3, args.img_size, args.img_size))
    images = images.astype(np.float32)
    labels = rng.integers(0, args.num_classes, args.batch_size)
    result["first_step_s"] = _seconds(lambda: backend.train_step(images, labels))
    for _ in range(args.warmup):
        backend.train_step(images, labels)
    result["step_ms"] = _median_ms(lambda: backend.train_step(images, labels), args.steps)
    result["first_eval_s"] = 0.0
    for prefix in FORMS:
        if prefix:  # the deploy form of the trained weights (BatchNorm statistics included)
            backend.load(backend.model_state(), f"overlock_{args.model}", args.num_classes, True)
        for size in args.eval_batch_sizes:
            batch = rng.standard_normal((size, 3, args.img_size, args.img_size))
            batch = batch.astype(np.float32)
            result["first_eval_s"] += _seconds(lambda b=batch: backend.eval_logits(b))
            for _ in range(args.warmup):
                backend.eval_logits(batch)
            eval_ms = _median_ms(lambda b=batch: backend.eval_logits(b), args.steps)
            result[f"{prefix}eval_b{size}_images_per_s"] = 1000 * size / eval_ms
    return backend, images


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one peer in this process; returns the result row."""
    rng = np.random.default_rng(0)
    result: dict[str, Any] = {"peer": args.worker, "device": args.device}
    shapes = json.loads(args.shapes) if args.shapes else None
    if args.worker == "natten":  # NATTEN's op only, in .venv-natten
        na2d, peak_mib, version = _torch_na2d(args.device, natten=True)
    else:
        framework = PEERS[args.worker][1]
        backend, images = _time_model(args, result, rng)
        na2d, peak_mib, version = (
            _torch_na2d(args.device, natten=False) if framework == "torch" else _jittor_na2d()
        )
        result["peak_mem_mib"] = peak_mib()  # before the op benchmark adds its own
        if args.worker not in ("eager", "jittor"):
            result["version"] = version
            return result
        shapes = _model_na2d_shapes(framework, backend, images)
    assert shapes, "the model made no na2d_av call"
    result["na2d_shapes"] = shapes
    for key, backward in (("na2d_fwd_ms", False), ("na2d_fwd_bwd_ms", True)):
        runs = []
        for attn_shape, value_shape, kernel in shapes:
            attn = rng.random(attn_shape, dtype=np.float32)
            value = rng.standard_normal(value_shape).astype(np.float32)
            runs.append(na2d(attn, value, kernel, backward))

        def all_shapes(runs: list[Callable] = runs) -> None:
            for run in runs:
                run()

        for _ in range(args.warmup + 1):
            all_shapes()
        result[key] = _median_ms(all_shapes, args.steps)
    result["version"] = version
    return result


# --- driver: alternate fresh worker processes, then summarise ------------------------------
def _worker_cmd(python: Path | str, peer: str, args: argparse.Namespace, shapes=None) -> list:
    cmd = [str(python), str(REPO / "bench.py"), "--worker", peer]
    cmd += ["--model", args.model, "--batch-size", str(args.batch_size)]
    cmd += ["--eval-batch-sizes", *map(str, args.eval_batch_sizes)]
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


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default="xxt", choices=NAMES)
    parser.add_argument("--batch-size", type=int, default=64, help="of the training step")
    parser.add_argument("--eval-batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument("--rounds", type=int, default=3, help="worker processes per peer")
    parser.add_argument("--steps", type=int, default=10, help="timed repetitions per measure")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--no-natten", action="store_true", help="skip NATTEN even if .venv-natten exists"
    )
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "bench")
    parser.add_argument("--worker", choices=(*PEERS, "natten"), help=argparse.SUPPRESS)
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
    if min(args.eval_batch_sizes) < 1:
        raise UsageError("--eval-batch-sizes must all be at least 1")
    check_img_size(args.img_size)
    if args.warmup < 0:
        raise UsageError("--warmup must be >= 0")
    check_writable_folder(args.out, f"--out {args.out}")
    rows, shapes = _run_rounds(args)
    _report(args, rows, shapes)


def _run_rounds(args: argparse.Namespace) -> tuple[list[dict[str, Any]], Any]:
    """Every round's worker rows (peers alternating), and the model's na2d_av shapes."""
    use_natten = NATTEN_PYTHON.is_file() and not args.no_natten and args.device == "cpu"
    rows: list[dict[str, Any]] = []
    shapes = None
    for round_ in range(args.rounds):
        order = args.peers if round_ % 2 == 0 else args.peers[::-1]
        for peer in order:
            print(f"round {round_ + 1}/{args.rounds}: {PEERS[peer][0]} ...", flush=True)
            row = _run_worker_process(_worker_cmd(sys.executable, peer, args))
            shapes = row.get("na2d_shapes", shapes)
            rows.append({"round": round_ + 1, **row})
        if use_natten and shapes:
            print(f"round {round_ + 1}/{args.rounds}: NATTEN (na2d_av only) ...", flush=True)
            row = _run_worker_process(_worker_cmd(NATTEN_PYTHON, "natten", args, shapes))
            rows.append({"round": round_ + 1, **row})
    return rows, shapes


def _report(args: argparse.Namespace, rows: list[dict[str, Any]], shapes: Any) -> None:
    """OUT/bench.csv (every round), OUT/bench.md (the table, also printed) and the ratios."""
    table = metrics(args.eval_batch_sizes)
    columns = ["round", "peer", "version", "device", *table]
    lines = [",".join(columns)]
    for row in rows:
        cells = (row.get(c) for c in columns)
        lines.append(",".join(f"{v:.6g}" if isinstance(v, float) else str(v or "") for v in cells))
    summary = summarise(rows)
    versions = {PEERS.get(r["peer"], ("", "natten"))[1]: r["version"] for r in rows}
    context = (
        f"OverLoCK-{args.model.upper()}, training batch {args.batch_size}, "
        f"{args.img_size}x{args.img_size}, {args.device} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores); median of "
        f"{args.rounds} rounds x {args.steps} calls; "
        + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
        + f"; na2d_av shapes (attn, value, K): {shapes}"
    )
    report = markdown(summary, table, context)
    atomic_write_bytes(args.out / "bench.csv", ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(args.out / "bench.md", report.encode())
    print(report)
    ratios = best_peers(summary, table)
    if ratios:
        said = [f"{table[m][0]} {r:.2f}x ({PEERS[p][0]})" for m, (r, p) in ratios.items()]
        print("Jittor / the best PyTorch peer: " + "; ".join(said))
    print(f"wrote {args.out / 'bench.csv'} and {args.out / 'bench.md'}")


if __name__ == "__main__":
    sys.exit(main())
