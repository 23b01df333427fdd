"""ERF and Grad-CAM of one seed's final checkpoints (seed 0 unless told otherwise), each
framework's model through its own backend, drawn side by side (``analysis.compare_maps_figure``):
seed<s>_erf.png and seed<s>_gradcam.png under the study folder, with the maps (.npz) beside them.

The checkpoints are ``checkpoint_latest`` of the seed's Jittor and PyTorch runs (the weights
after the last epoch). The data, image size and classes are those of the PyTorch run (its
config.json). The ERF uses the first ``erf_images`` validation images as ``erf.py`` does;
Grad-CAM the first ``cam_images``, explaining each image's true class in both frameworks, so the
difference row compares maps of one class even where the two predict different ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from analysis.checkpoints import load_checkpoint
from analysis.compare_maps_figure import erf_comparison_figure, gradcam_comparison_figure
from analysis.compare_study import SUFFIXES, Run, announce, map_figures
from analysis.erf import read_batches
from analysis.erf_maps import ErfResult, compute_erf
from analysis.gradcam_maps import compute_cams
from analysis.inputs import check_img_size, val_dataset
from analysis.output import figure_png, npz_bytes, write_together
from backends.base import Backend
from core.errors import UsageError
from engine.logs import LATEST

NAMES = {"jittor": "Jittor", "torch": "PyTorch"}  # rows in this order


def final_checkpoints(root: Path, seed: int) -> dict[str, Path]:
    """framework -> the seed's last checkpoint."""
    return {f: root / Run(f, seed).name / f"{LATEST}{SUFFIXES[f]}" for f in NAMES}


def up_to_date(root: Path, seed: int) -> bool:
    """Both figures exist and are newer than both checkpoints."""
    outputs = [root / name for name in map_figures(seed)]
    if not all(p.is_file() for p in outputs):
        return False
    newest = max(p.stat().st_mtime for p in final_checkpoints(root, seed).values())
    return min(p.stat().st_mtime for p in outputs) > newest


def _run_config(root: Path, seed: int) -> tuple[Path, int]:
    path = root / Run("torch", seed).name / "config.json"
    try:
        config = json.loads(path.read_text())
        return Path(config["dataset"]), int(config["img_size"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path}: cannot read the run's data and image size ({err})") from None


def _write_erf(figure: Path, results: Mapping[str, ErfResult], title: str) -> None:
    arrays = {f"{f}_maps": r.maps for f, r in results.items()}
    write_together({
        figure: figure_png(erf_comparison_figure(
            {NAMES[f]: r for f, r in results.items()}, title)),
        figure.with_suffix(".npz"): npz_bytes(
            num_images=next(iter(results.values())).num_images, **arrays),
    })  # fmt: skip


def seed_maps(
    root: Path,
    seed: int,
    backends: Mapping[str, type[Backend]],
    erf_images: int,
    cam_images: int,
    device: str = "auto",
    say: Callable[[str], None] = announce,
) -> None:
    """Compute and draw the seed's two figures (``backends``: framework -> its Backend class)."""
    data, img_size = _run_config(root, seed)
    check_img_size(img_size)
    checkpoints = final_checkpoints(root, seed)
    states = {f: load_checkpoint(path) for f, path in checkpoints.items()}
    model_name, num_classes = states["torch"][1], states["torch"][2]
    batches = read_batches(data, num_classes, img_size, erf_images, 25)
    dataset = val_dataset(data, num_classes, img_size)
    indices = list(range(min(cam_images, len(dataset))))
    images = np.stack([dataset.load(i) for i in indices])
    labels = dataset.labels[indices]
    erfs, cams, predicted, logits = {}, {}, {}, {}
    for framework in NAMES:
        backend = backends[framework](device)
        state, name, classes = states[framework]
        backend.load(state, name, classes)
        say(f"compare: ERF and Grad-CAM of {checkpoints[framework]} ({NAMES[framework]})")
        erfs[framework] = compute_erf(backend.stage_input_grads, batches)
        logits[framework], _, cams[framework], _ = compute_cams(backend, images, labels)
        predicted[framework] = np.argmax(logits[framework], axis=1)
    where = f"seed {seed}'s final checkpoints ({model_name})"
    erf_figure, cam_figure = (root / name for name in map_figures(seed))
    _write_erf(erf_figure, erfs, f"Effective receptive field, {where}, "
               f"{erfs['torch'].num_images} validation images")  # fmt: skip
    cam_title = f"Grad-CAM of the true class, {where}, validation images {indices}"
    write_together({
        cam_figure: figure_png(gradcam_comparison_figure(
            images, {NAMES[f]: c for f, c in cams.items()},
            {NAMES[f]: p for f, p in predicted.items()}, labels, dataset.class_names, indices,
            cam_title)),
        cam_figure.with_suffix(".npz"): npz_bytes(
            indices=np.array(indices), labels=labels,
            **{f"{f}_cams": c for f, c in cams.items()},
            **{f"{f}_logits": v for f, v in logits.items()}),
    })  # fmt: skip
    say(f"compare: wrote {erf_figure} and {cam_figure}")
