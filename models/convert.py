"""Convert OverLoCK weights between PyTorch (.pth/.pt) and Jittor (.pkl) by the file extensions.

    python -m models.convert SRC DST [--model overlock_xt] [--num-classes 1000]

SRC may be a plain state dict or one wrapped in 'state_dict' / 'model' (official, timm and this
project's training checkpoints). The weights are checked against the architecture (given with
--model, otherwise recognised from the keys and shapes): unknown or missing keys and shape
mismatches are counted, a few of each named, in one error (with the --model / --num-classes they
fit, when they fit another), and nothing is written. Values are copied bit for bit, so
torch -> jittor -> torch gives back the identical state dict.

Errors are one line: bad values, files or weights exit 2 before anything is written; a
destination that cannot be written (a read-only folder is found before SRC is read, a full disk
while writing) names DST and exits 1 or 2, and leaves no partial file.

The Jittor format is Jittor's own (``jt.save``/``jt.load``): a pickled dict of numpy arrays with a
SHA-1 trailer. It is read and written here without importing Jittor.
"""

from __future__ import annotations

import argparse
import sys

from core.cli import ArgumentParser, main_guard
from models.weights import VARIANTS, convert


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def build_parser() -> ArgumentParser:
    """The converter's flags (one-line errors)."""
    parser = ArgumentParser(
        prog="python -m models.convert",
        description="Convert OverLoCK weights between PyTorch (.pth/.pt) and Jittor (.pkl); "
        "the direction follows the file extensions.",
    )
    parser.add_argument("src", help="checkpoint to read (.pth/.pt or .pkl)")
    parser.add_argument("dst", help="file to write (.pth/.pt or .pkl)")
    parser.add_argument(
        "--model", choices=VARIANTS, help="architecture to check against (default: recognised)"
    )
    parser.add_argument(
        "--num-classes",
        type=positive_int,
        help="classifier width (default: read from the weights)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Bad input: one line, exit 2; a failed write (full disk, no permission): one line naming
    DST, exit 1. DST is written whole or not at all."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        name, classes = convert(args.src, args.dst, args.model, args.num_classes)
        print(f"wrote {args.dst} ({name}, {classes} classes)")

    return main_guard(run)


if __name__ == "__main__":
    sys.exit(main())
