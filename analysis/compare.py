"""The command of compare.py: its flags, the study's settings (saved in study.json and checked
when a study continues), training the runs (``analysis.compare_study``), one seed's ERF and
Grad-CAM (``analysis.compare_maps``) and the report (``analysis.compare_report``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from analysis.compare_maps import final_checkpoints, seed_maps, up_to_date
from analysis.compare_report import FIGURE, REPORT, TABLE, summary_lines, write_report
from analysis.compare_study import (
    Run,
    StudySettings,
    announce,
    check_same_study,
    load_settings,
    plan,
    run_status,
    run_study,
    save_settings,
)
from backends.base import Backend
from core.cli import ArgumentParser, HelpFormatter
from core.errors import RunStoppedError, UsageError
from core.files import check_writable_folder

DEFAULT_SEEDS, DEFAULT_EPOCHS = 3, 20
BackendClasses = Callable[[], Mapping[str, type[Backend]]]


def build_parser(description: str) -> argparse.ArgumentParser:
    """The flags of compare.py (training flags for both scripts go after ``--``)."""
    parser = ArgumentParser(
        description=description, formatter_class=HelpFormatter, usage="%(prog)s [options] [-- "
        "training flags]"
    )  # fmt: skip
    parser.add_argument(
        "--data", type=Path, help="TinyImageNet folder; default: the generated dataset"
    )
    parser.add_argument(
        "--seeds", type=int, help=f"seeds 0..N-1 (default: the study's, else {DEFAULT_SEEDS})"
    )
    parser.add_argument(
        "--epochs", type=int, help=f"per run (default: the study's, else {DEFAULT_EPOCHS})"
    )
    parser.add_argument("--train-per-class", type=int, help="training images per class (cap)")
    parser.add_argument("--val-per-class", type=int, help="validation images per class (cap)")
    parser.add_argument(
        "--out", type=Path, default=Path("logs") / "compare", help="the study's folder"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing: rebuild the report"
    )
    parser.add_argument("--no-maps", action="store_true", help="skip the ERF and Grad-CAM figures")
    parser.add_argument(
        "--maps-seed", type=int, default=0, help="the seed whose final checkpoints they show"
    )
    parser.add_argument("--erf-images", type=int, default=200, help="validation images (ERF)")
    parser.add_argument(
        "--gradcam-images", type=int, default=4, help="first validation images (Grad-CAM)"
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="for ERF and Grad-CAM"
    )
    return parser


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(compare.py's flags, the training flags after ``--``)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def _check(args: argparse.Namespace) -> None:
    for flag, value in (
        ("--seeds", args.seeds), ("--epochs", args.epochs), ("--erf-images", args.erf_images),
        ("--gradcam-images", args.gradcam_images), ("--train-per-class", args.train_per_class),
        ("--val-per-class", args.val_per_class),
    ):  # fmt: skip
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1 (got {value})")
    if args.maps_seed < 0:
        raise UsageError(f"--maps-seed must be 0 or more (got {args.maps_seed})")
    if args.data is not None and not args.data.is_dir():
        raise UsageError(f"--data {args.data}: no such folder")


def settings_of(
    args: argparse.Namespace, train_args: list[str], saved: StudySettings | None
) -> StudySettings:
    """The study's settings: the flags given, the saved study's seeds and epochs otherwise."""
    extra = []
    for flag, value in (
        ("--train-per-class", args.train_per_class), ("--val-per-class", args.val_per_class)
    ):  # fmt: skip
        if value is not None:
            extra += [flag, str(value)]
    data = None if args.data is None else str(args.data.resolve())
    seeds = args.seeds or (saved.seeds if saved else DEFAULT_SEEDS)
    epochs = args.epochs or (saved.epochs if saved else DEFAULT_EPOCHS)
    return StudySettings(data, epochs, seeds, extra + train_args)


def _report(root: Path, settings: StudySettings) -> None:
    data = write_report(root, settings)
    for line in summary_lines(data):
        announce(f"compare: {line}")
    announce(f"compare: wrote {root / REPORT}, {root / FIGURE}, {root / TABLE}")


def _maps(
    args: argparse.Namespace, root: Path, settings: StudySettings, backends: BackendClasses
) -> None:
    if args.no_maps:
        return
    seed = args.maps_seed
    pair = [run_status(root, Run(f, seed), settings.epochs) for f in ("torch", "jittor")]
    if any(s.state != "complete" for s in pair):
        return
    absent = [str(p) for p in final_checkpoints(root, seed).values() if not p.is_file()]
    if absent:  # e.g. a fresh clone: it holds the logs, not the checkpoints
        announce(
            f"compare: no ERF and Grad-CAM of seed {seed}: {', '.join(absent)} not found (the "
            "logs alone cannot give them); --maps-seed S draws another complete seed's"
        )
        return
    if up_to_date(root, seed):
        announce(f"compare: seed {seed}'s ERF and Grad-CAM figures are up to date")
        return
    seed_maps(root, seed, backends(), args.erf_images, args.gradcam_images, args.device)


def _started(root: Path, saved: StudySettings) -> bool:
    """Whether any run of the saved study has trained (until then its settings may change, e.g.
    after a mistyped training flag stopped the first run)."""
    return any(run_status(root, r, saved.epochs).state != "missing" for r in plan(saved.seeds))


def run_compare(argv: Sequence[str], description: str, backends: BackendClasses) -> None:
    """What compare.py does; ``backends()`` imports and returns both Backend classes (only
    the ERF and Grad-CAM step needs them)."""
    own, train_args = split_argv(argv)
    args = build_parser(description).parse_args(own)
    _check(args)
    root = args.out
    saved = load_settings(root)
    settings = settings_of(args, train_args, saved)
    if args.maps_seed >= settings.seeds:
        raise UsageError(
            f"--maps-seed {args.maps_seed}: the study has seeds 0..{settings.seeds - 1}"
        )
    if args.report_only:
        if saved is None and not root.is_dir():
            raise UsageError(f"--report-only: {root} holds no study (run compare.py first)")
        base = saved or settings
        settings = StudySettings(base.data, settings.epochs, settings.seeds, base.train_args)
        check_writable_folder(root, f"--out {root}")
        _report(root, settings)
        return
    if saved is not None and _started(root, saved):
        check_same_study(root, saved, settings)
    check_writable_folder(root, f"--out {root}")
    save_settings(root, settings)
    try:
        run_study(root, settings)
    except RunStoppedError:
        _report(root, settings)  # what there is so far, then the stop's line and status
        raise
    _maps(args, root, settings, backends)
    _report(root, settings)
