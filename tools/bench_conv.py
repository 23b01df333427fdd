"""Time one dense 3x3 convolution forward at batch 64 in Jittor and PyTorch.

A quick check that Jittor's CPU convolutions run through oneDNN at PyTorch's speed
(without oneDNN they are 3-45x slower). Medians over repeated runs; warm-up excluded.
The full training benchmark is a separate script.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as TF

from core.jittor_env import DEVICE, jt

SHAPES = [  # (in channels, out channels, size, stride): stem input and XXT stage widths
    (3, 12, 64, 2),
    (24, 24, 16, 1),
    (48, 48, 8, 1),
    (64, 64, 32, 1),
]


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: Jittor compiles here
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per shape")
    args = parser.parse_args()
    if args.batch_size < 1 or args.repeats < 1:
        parser.error("--batch-size and --repeats must be >= 1")

    print(
        f"jittor {jt.__version__} on {DEVICE}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), batch {args.batch_size}"
    )
    header = f"{'conv (cin->cout, HxW, stride)':34s} {'jittor ms':>10s} {'torch ms':>10s}"
    print(f"{header} {'ratio':>7s}")
    rng = np.random.default_rng(0)
    for cin, cout, size, stride in SHAPES:
        x = rng.standard_normal((args.batch_size, cin, size, size)).astype(np.float32)
        w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
        jx, jw = jt.array(x), jt.array(w)
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)

        def run_jittor(jx=jx, jw=jw, stride=stride):
            jt.nn.conv2d(jx, jw, stride=stride, padding=1).sync()

        def run_torch(tx=tx, tw=tw, stride=stride):
            with torch.no_grad():
                TF.conv2d(tx, tw, stride=stride, padding=1)

        jit_ms = _median_ms(run_jittor, args.repeats)
        torch_ms = _median_ms(run_torch, args.repeats)
        label = f"{cin}->{cout}, {size}x{size}, s{stride}"
        print(f"{label:34s} {jit_ms:10.3f} {torch_ms:10.3f} {jit_ms / torch_ms:7.2f}")


if __name__ == "__main__":
    main()
