"""The command of locate_divergence.py: its flags, the batch, running both frameworks' probes on
one checkpoint, and the table and verdict it prints (and writes with --out). The comparison is
in ``analysis.divergence_blocks``; the probes (``backends.probe_torch``,
``backends.probe_jittor``) are passed in by the entry script.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis.checkpoints import load_checkpoint
from analysis.divergence_blocks import (
    ACTIVATION_TOL,
    GRAD_TOL,
    Finding,
    block_names,
    compare_probes,
    format_table,
    format_verdict,
    locate,
)
from analysis.erf_maps import csv_bytes
from analysis.output import check_output, write_together
from core.cli import ArgumentParser, HelpFormatter
from core.errors import UsageError

ProbeFn = Callable[..., Any]  # backends.probe_*.block_probe
NAMES = {"torch": "PyTorch", "jittor": "Jittor"}


def build_parser(description: str) -> argparse.ArgumentParser:
    """The flags of locate_divergence.py."""
    parser = ArgumentParser(description=description, formatter_class=HelpFormatter)
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="weights: .pth or .pkl of either framework"
    )
    batch = parser.add_argument_group("the batch")
    batch.add_argument(
        "--data", type=Path, help="TinyImageNet-layout folder; default: the generated dataset"
    )
    batch.add_argument(
        "--random", action="store_true", help="a random N(0, 1) batch and labels instead of data"
    )
    batch.add_argument("--seed", type=int, default=0, help="the training run's --seed")
    batch.add_argument("--batch-size", type=int, default=16, help="images in the batch")
    batch.add_argument(
        "--train-per-class",
        type=int,
        help="the training run's cap, so the batch is its first (default: the layout's, 500)",
    )
    batch.add_argument("--img-size", type=int, default=64, help="input side in px")
    check = parser.add_argument_group("the comparison")
    check.add_argument(
        "--eval",
        action="store_true",
        help="eval mode (BatchNorm running statistics, loss CE(main)); default: training mode "
        "and the training loss CE(main) + 0.4 CE(aux), as a training step",
    )
    check.add_argument(
        "--tol", type=float, default=ACTIVATION_TOL, help="relative tolerance of block outputs"
    )
    check.add_argument(
        "--grad-tol", type=float, default=GRAD_TOL, help="relative tolerance of gradients"
    )
    check.add_argument(
        "--reference", choices=tuple(NAMES), default="torch", help="whose values Δ is relative to"
    )
    check.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where both run; the tolerances were measured on the CPU",
    )
    check.add_argument("--out", type=Path, help="also write the table as CSV here")
    return parser


def read_batch(args: argparse.Namespace, num_classes: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(images float32 N x 3 x H x W, labels int64 N, what they are): the first training batch
    of --data with --seed (order and flips as training draws them), or a random one."""
    if args.random:
        rng = np.random.default_rng(args.seed)
        shape = (args.batch_size, 3, args.img_size, args.img_size)
        images = rng.standard_normal(shape).astype(np.float32)
        labels = rng.integers(0, num_classes, args.batch_size).astype(np.int64)
        return images, labels, f"a random N(0, 1) batch of {args.batch_size} (seed {args.seed})"
    from data import BatchLoader, open_dataset, resolve_data_dir

    root = resolve_data_dir(args.data)
    dataset = open_dataset(root, "train", num_classes, args.train_per_class, args.img_size)
    loader = BatchLoader(dataset, args.batch_size, seed=args.seed, train=True)
    images, labels = next(loader.batches(0))
    what = f"the first training batch of {root} (seed {args.seed}, {len(labels)} images)"
    return images, labels, what


def _check(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.img_size < 32 or args.img_size % 32:
        raise UsageError(f"--img-size {args.img_size}: use a multiple of 32 (e.g. 64)")
    if not (args.tol > 0 and args.grad_tol > 0):
        raise UsageError("--tol and --grad-tol must be positive")
    if args.out is not None:
        check_output(args.out, "--out")


def _rows(diffs: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "block": d.name, "what": d.label, "outputs": d.outputs, "act_max_abs": d.act_abs,
            "act_rel": d.act_rel, "params": d.params, "grad_max_abs": d.grad_abs,
            "grad_rel": d.grad_rel, "note": d.note,
        }
        for d in diffs
    ]  # fmt: skip


def run_locator(
    argv: Sequence[str] | None, description: str, probes: Mapping[str, Callable[[], ProbeFn]]
) -> Finding:
    """What locate_divergence.py does; ``probes``: framework -> a function that imports and
    returns its ``block_probe``. Raises UsageError (and data/checkpoint errors)."""
    args = build_parser(description).parse_args(argv)
    _check(args)
    state, model_name, num_classes = load_checkpoint(args.checkpoint)
    images, labels, what = read_batch(args, num_classes)
    order = [args.reference] + [f for f in probes if f != args.reference]
    mode = "eval mode" if args.eval else "training mode"
    print(f"{args.checkpoint} ({model_name}, {num_classes} classes), {mode}, {what}")
    blocks = block_names(state)
    results = {}
    for framework in order:
        start = time.perf_counter()
        probe = probes[framework]()
        results[framework] = probe(
            state, model_name, num_classes, images, labels, blocks, train=not args.eval,
            device=args.device,
        )  # fmt: skip
        took = time.perf_counter() - start
        print(f"{NAMES[framework]}: loss {results[framework][2]:.6f} ({took:.1f}s)")
    diffs = compare_probes(results[order[0]], results[order[1]])
    finding = locate(diffs, args.tol, args.grad_tol)
    print(f"Δ = {NAMES[order[1]]} - {NAMES[order[0]]}, relative to {NAMES[order[0]]}")
    print(format_table(diffs, finding))
    print(format_verdict(finding, [NAMES[f] for f in order]))
    if args.out is not None:
        write_together({args.out: csv_bytes(_rows(diffs))})
        print(f"wrote {args.out}")
    return finding
