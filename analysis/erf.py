"""The ERF command of erf.py / erf_torch.py: its flags, the validation batches, and the figure,
CSV and maps it writes. The method is in ``analysis.erf_maps``, the figure in
``analysis.erf_figure``; a ``backends.base.Backend`` computes the gradients.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analysis.checkpoints import load_checkpoint
from analysis.erf_figure import erf_figure
from analysis.erf_maps import ErfResult, compute_erf, csv_bytes, format_rows
from analysis.inputs import (
    STAGE_NAMES,
    add_model_args,
    check_img_size,
    to_model_input,
    val_dataset,
)
from analysis.output import check_output, figure_png, npz_bytes, write_together
from backends.base import Backend
from core.cli import ArgumentParser, HelpFormatter
from core.errors import UsageError

DEFAULT_NUM_IMAGES = 200


def build_parser(framework: str, suffix: str, description: str) -> argparse.ArgumentParser:
    """The flags of erf.py / erf_torch.py; ``framework`` and ``suffix`` set the defaults."""
    parser = ArgumentParser(description=description, formatter_class=HelpFormatter)
    add_model_args(parser, framework, suffix)
    parser.add_argument(
        "--num-images",
        type=int,
        default=DEFAULT_NUM_IMAGES,
        help="first N validation images (all if fewer)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=25, help="images per forward/backward pass"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("visualization") / f"erf_{framework}.png",
        help="figure; the area ratios go to the same path with .csv, the maps to .npz",
    )
    return parser


def read_batches(
    data: Path | None, num_classes: int, img_size: int, num_images: int, batch_size: int
) -> list[np.ndarray]:
    """The first ``num_images`` validation images (all if fewer) as model-input batches."""
    dataset = val_dataset(data, num_classes, img_size)
    count = min(num_images, len(dataset))
    if count < num_images:
        print(f"note: {dataset.root} has {len(dataset)} validation images; using all of them")

    def batch(first: int) -> np.ndarray:
        indices = range(first, min(first + batch_size, count))
        return to_model_input(np.stack([dataset.load(i) for i in indices]))

    return [batch(first) for first in range(0, count, batch_size)]


def write_outputs(result: ErfResult, out: Path, title: str) -> list[dict]:
    """The figure at ``out``, the area ratios beside it (.csv) and the maps (.npz), all three or
    none; the rows."""
    rows = result.area_rows()
    maps = npz_bytes(
        maps=result.maps,
        num_images=result.num_images,
        feature_shapes=np.array(result.feature_shapes),
        stage_names=np.array(STAGE_NAMES),
    )
    write_together(
        {
            out: figure_png(erf_figure(result, title)),
            out.with_suffix(".csv"): csv_bytes(rows),
            out.with_suffix(".npz"): maps,
        }
    )
    return rows


def run_erf(argv: Sequence[str] | None, description: str, backend_cls: type[Backend]) -> ErfResult:
    """What erf.py and erf_torch.py do; raises UsageError (and data/checkpoint errors)."""
    args = build_parser(backend_cls.name, backend_cls.suffix, description).parse_args(argv)
    check_img_size(args.img_size)
    if args.num_images < 1 or args.batch_size < 1:
        raise UsageError("--num-images and --batch-size must be at least 1")
    check_output(args.out, "--out")
    state, model_name, num_classes = load_checkpoint(args.checkpoint)
    batches = read_batches(
        args.data, args.num_classes or num_classes, args.img_size, args.num_images, args.batch_size
    )

    backend = backend_cls(args.device)
    backend.load(state, model_name, num_classes)
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"\r{backend.name}: batch {done}/{total}", end="\n" if done == total else "")

    result = compute_erf(backend.stage_input_grads, batches, progress)
    title = (
        f"Effective receptive field, {backend.name}: {args.checkpoint.name} ({model_name}), "
        f"{result.num_images} validation images at {args.img_size}x{args.img_size}"
    )
    rows = write_outputs(result, args.out, title)
    print(format_rows(rows))
    print(
        f"wrote {args.out}, {args.out.with_suffix('.csv')}, {args.out.with_suffix('.npz')} "
        f"({time.perf_counter() - start:.1f}s)"
    )
    return result
