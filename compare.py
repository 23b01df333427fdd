"""Alignment study: Jittor vs PyTorch over several seeds, with a rounding-noise control.

Trains, one after the other (as child processes of train_torch.py and train.py), under --out
(default logs/compare):

- for each seed s in 0..N-1 (--seeds, default 3): seed<s>/torch, a PyTorch run with --seed s,
  and seed<s>/jittor, a Jittor run with --seed s from that run's init.pth: the same initial
  weights and the same batches. --seed sets the initial weights, the data order and the flips,
  so different seeds differ in all three;
- seed0/torch_ulp, the control: PyTorch from seed 0's init.pth with every float entry moved
  up by one float32 ulp (np.nextafter; seed0/init_ulp.pth), everything else as seed 0's
  PyTorch run: how fast float round-off alone separates two runs.

Each run uses the training scripts' defaults (the TinyImageNet-20 protocol, 20 epochs: --epochs)
plus --data, the caps --train-per-class / --val-per-class and any training flags given after
"--" (e.g. "-- --batch-size 32 --workers 0"), the same for every run. Order: seed 0's pair, the
control, then the other seeds.

Resumable: run it again with the same settings and it skips the complete runs, resumes an
unfinished one from its checkpoint_latest (--resume) and starts the missing ones. A clone holds
the logs but no weights: a PyTorch init.pth that a run still needs is drawn again from its
--seed (a one-batch run, kept only if its first logged step equals the logged run's). --seeds and
--epochs may grow between invocations; --data, the caps and the training flags are kept in
study.json and must stay the same. A stop signal (Ctrl-C, SIGTERM, SIGHUP) reaches the running
training process, which saves a resumable checkpoint; the study then writes its report of what
exists and exits with 128 + signal. A run that fails stops the study with its exit status.

At the end (also with --report-only, which trains nothing), under --out:

- report.md: the runs and their status (missing and unfinished ones named), final and best
  top-1 / top-5 as mean ± std per framework, the paired tests of top-1 (Jittor - PyTorch per
  seed, final and best): the plain paired t-test and the equivalence test TOST at ±1 point
  with their p-values, the smallest margin the data establish at p < 0.05, and one sentence of
  conclusion; the per-epoch |Δ| between the frameworks for the same seed next to that between
  seed 0 and its ulp control and the spread between seeds; per-epoch mean ± std tables. With
  fewer than 2 seeds the standard deviations and tests are undefined, and the report says so;
- report.png: those curves (bands per framework) and gaps; per_epoch.csv: every per-epoch value;
- seed0_erf.png and seed0_gradcam.png (+ .npz): ERF and Grad-CAM of seed 0's final checkpoints
  (--maps-seed S: seed S's, seedS_*.png), a Jittor row, a PyTorch row and their difference (once
  both runs are complete and their checkpoint_latest files are there: a clone holds the logs, not
  the checkpoints; --no-maps skips them; redrawn only when a checkpoint is newer).

Example (a quick study on the generated dataset):
  .venv/bin/python compare.py --seeds 2 --epochs 1 --train-per-class 8 --val-per-class 4
The full study: make compare DATA=/path/to/tiny-imagenet-200 (SEEDS=3 EPOCHS=20).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from core.cli import main_guard

if TYPE_CHECKING:
    from backends.base import Backend


def _backends() -> Mapping[str, type[Backend]]:
    from backends.jittor_backend import JittorBackend
    from backends.torch_backend import TorchBackend

    return {"jittor": JittorBackend, "torch": TorchBackend}


def main(argv: list[str] | None = None) -> int:
    def run() -> None:
        from analysis.compare import run_compare

        run_compare(sys.argv[1:] if argv is None else argv, __doc__, _backends)

    return main_guard(run)


if __name__ == "__main__":
    sys.exit(main())
