"""Convert OverLoCK weights between PyTorch (.pth/.pt) and Jittor (.pkl) by the file extensions.

    python -m models.convert SRC DST [--model overlock_xt] [--num-classes 1000]

SRC may be a plain state dict or one wrapped in 'state_dict' / 'model' (official, timm and this
project's training checkpoints). The weights are checked against the architecture (given with
--model, otherwise recognised from the keys and shapes): unknown or missing keys and shape
mismatches are listed in one error and nothing is written. Values are copied bit for bit, so
torch -> jittor -> torch gives back the identical state dict.

The Jittor format is Jittor's own (``jt.save``/``jt.load``): a pickled dict of numpy arrays with a
SHA-1 trailer. It is read and written here without importing Jittor.
"""

from __future__ import annotations

import argparse
import sys

from core.errors import CheckpointError
from models.weights import VARIANTS, convert


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
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
        "--num-classes", type=int, help="classifier width (default: read from the weights)"
    )
    args = parser.parse_args(argv)
    try:
        name, classes = convert(args.src, args.dst, args.model, args.num_classes)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst} ({name}, {classes} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
