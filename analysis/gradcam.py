"""The Grad-CAM command of gradcam.py / gradcam_torch.py: its flags, the chosen validation images
and class, and the figure, maps and lines it writes. The method is in ``analysis.gradcam_maps``,
the figure in ``analysis.gradcam_figure``; a ``backends.base.Backend`` computes the gradients.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analysis.checkpoints import load_checkpoint
from analysis.gradcam_figure import gradcam_figure
from analysis.gradcam_maps import CamResult, compute_cams, peak_position, short_name, softmax
from analysis.inputs import add_model_args, check_img_size, val_dataset
from analysis.output import check_output, figure_png, npz_bytes, write_together
from backends.base import Backend
from core.cli import ArgumentParser, HelpFormatter
from core.errors import UsageError

DEFAULT_IMAGES = tuple(range(8))


def parse_class(value: str | None, class_names: Sequence[str], wnids: Sequence[str]) -> int | None:
    """--class as an index, a wnid or a class name; None: the predicted class."""
    if value is None:
        return None
    if value.lstrip("-").isdigit():
        index = int(value)
        if not 0 <= index < len(class_names):
            raise UsageError(f"--class {index}: use 0..{len(class_names) - 1}")
        return index
    for names in (wnids, class_names, [short_name(c, 10**6) for c in class_names]):
        if value in names:
            return list(names).index(value)
    raise UsageError(f"--class {value!r}: not an index, wnid or class name of this dataset")


def build_parser(framework: str, suffix: str, description: str) -> argparse.ArgumentParser:
    """The flags of gradcam.py / gradcam_torch.py; ``framework`` and ``suffix`` set the defaults."""
    parser = ArgumentParser(description=description, formatter_class=HelpFormatter)
    add_model_args(parser, framework, suffix)
    parser.add_argument(
        "--images",
        type=int,
        nargs="+",
        default=list(DEFAULT_IMAGES),
        metavar="INDEX",
        help="validation image indices (the validation order of training)",
    )
    parser.add_argument(
        "--class",
        dest="target_class",
        metavar="CLASS",
        help="explain this class (index, wnid or name) instead of each image's prediction",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("visualization") / f"gradcam_{framework}.png",
        help="figure; the maps at stage resolution go to the same path with .npz",
    )
    return parser


def print_peaks(result: CamResult, class_names: Sequence[str]) -> None:
    """One line per image: true, predicted and explained class, each stage's peak."""
    for r, index in enumerate(result.indices):
        peaks = ", ".join(f"{peak_position(result.cams[s, r])}" for s in range(len(result.cams)))
        explained = result.classes[r]
        print(
            f"image {index}: true {class_names[result.labels[r]]}, predicted "
            f"{class_names[result.predicted[r]]}; explaining {class_names[explained]} "
            f"(p={result.probs[r, explained]:.3f}); peaks (row, col) per stage: {peaks}"
        )


def run_gradcam(
    argv: Sequence[str] | None, description: str, backend_cls: type[Backend]
) -> CamResult:
    """What gradcam.py and gradcam_torch.py do; raises UsageError (and data/checkpoint errors)."""
    args = build_parser(backend_cls.name, backend_cls.suffix, description).parse_args(argv)
    check_img_size(args.img_size)
    check_output(args.out, "--out")
    state, model_name, num_classes = load_checkpoint(args.checkpoint)
    if args.num_classes not in (None, num_classes):
        raise UsageError(
            f"--num-classes {args.num_classes}: the checkpoint classifies {num_classes} classes"
        )
    dataset = val_dataset(args.data, num_classes, args.img_size)
    bad = [i for i in args.images if not 0 <= i < len(dataset)]
    if bad:
        raise UsageError(f"--images {bad}: the validation split has indices 0..{len(dataset) - 1}")
    target = parse_class(args.target_class, dataset.class_names, dataset.wnids)

    backend = backend_cls(args.device)
    backend.load(state, model_name, num_classes)
    start = time.perf_counter()
    images = np.stack([dataset.load(i) for i in args.images])
    classes = None if target is None else np.full(len(images), target)
    logits, chosen, cams, raw = compute_cams(backend, images, classes)
    result = CamResult(
        indices=list(args.images),
        images=images,
        labels=dataset.labels[args.images],
        classes=chosen,
        probs=softmax(logits.astype(np.float64)),
        predicted=np.argmax(logits, axis=1),
        cams=cams,
        raw=raw,
    )
    explained = "predicted" if target is None else f"{target} ({dataset.class_names[target]})"
    title = f"Grad-CAM, {backend.name}: {args.checkpoint.name} ({model_name})"
    maps = npz_bytes(
        indices=np.array(result.indices),
        labels=result.labels,
        classes=result.classes,
        logits=logits,
        **{f"stage{s + 1}": r for s, r in enumerate(raw)},
    )
    figure = figure_png(gradcam_figure(result, dataset.class_names, title, explained))
    write_together({args.out: figure, args.out.with_suffix(".npz"): maps})
    print_peaks(result, dataset.class_names)
    print(
        f"wrote {args.out} and {args.out.with_suffix('.npz')} ({time.perf_counter() - start:.1f}s)"
    )
    return result
