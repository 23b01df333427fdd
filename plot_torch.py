"""Training curves of OverLoCK runs, PyTorch run primary (twin of plot.py).

Reads the per-epoch CSV logs written by train.py / train_torch.py (default: logs/torch/log.csv,
then logs/jittor/log.csv overlaid; any number with --logs PATH[:LABEL] ..., the first primary) and
writes

- the figure (--out, default visualization/training_metrics.png, 12x7 in at 150 dpi): total train
  loss; main-head loss (train solid, validation dashed); auxiliary-head loss; validation top-1 and
  top-5 accuracy; wall time per epoch;
- a Markdown table (--table, default: the figure's path with .md), also printed: final and best
  metrics per run, and the per-epoch gap between the first two runs (|Δ loss|, Δ top-1/top-5) over
  the epochs both logged (runs of unequal length are compared over the common epochs; it says so).

A missing log or column is reported in one line with exit status 2.
"""

from __future__ import annotations

import sys

from core.cli import main_guard


def main(argv: list[str] | None = None) -> int:
    def run() -> None:
        # Imported here, inside the guard: Ctrl-C during the framework's import is one line.
        from analysis.plotting import run_cli

        run_cli(argv, "torch", "jittor", __doc__)

    return main_guard(run)


if __name__ == "__main__":
    sys.exit(main())
