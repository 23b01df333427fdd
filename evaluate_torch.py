"""Top-1 / top-5 accuracy and loss of an OverLoCK checkpoint, computed with PyTorch (twin of
evaluate.py: same flags, same numbers).

    python evaluate_torch.py --checkpoint overlock_t_in1k_224.pth --data /path/to/imagenet
    python evaluate_torch.py --checkpoint logs/torch/checkpoint_best.pth --data DIR --img-size 64

The checkpoint may come from either framework (.pth or .pkl): a training checkpoint, a bare state
dict or an official release file. ImageNet-layout data gets the official evaluation transform
(bicubic resize to floor(img_size / crop_pct), centre crop; crop_pct per variant); class folders
are sorted and class i is scored as head output i. Prints one line (model, checkpoint, images,
top-1, top-5, loss); --out also writes it as JSON. Details: analysis/evaluate.py.
"""

from __future__ import annotations

import sys

from core.cli import main_guard


def main(argv: list[str] | None = None) -> int:
    def run() -> None:
        # Imported here, inside the guard: Ctrl-C during the framework's import is one line.
        from analysis.evaluate import run_evaluation
        from backends.torch_backend import TorchBackend

        run_evaluation(argv, __doc__, TorchBackend)

    return main_guard(run)


if __name__ == "__main__":
    sys.exit(main())
