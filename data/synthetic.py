"""A small procedurally drawn dataset in exactly the TinyImageNet layout: the default data.

Class ``c`` is a shape (``c % 5``: circle, square, triangle, cross, star) in a hue (``c // 5 % 4``:
red, lime, cyan, violet) with a fill style (``c // 20``: solid, outline, striped, checked,
dotted), so up to 100 classes; 20 classes use solid fills. Every image varies position, scale,
rotation, aspect, colour shade, a textured low-saturation background, distractor lines and
pixel noise, so a small CNN needs a few epochs, not one glance. Images and file names depend
only on the seed and the options (each image has its own generator keyed by split, class and
number), so a regenerated dataset is byte-identical.

Output (``wnids`` are fake: ``n00000000``, ``n00000001``, ...)::

    wnids.txt, words.txt, synthetic.json (the options, to detect a stale default dataset)
    train/<wnid>/images/<wnid>_<k>.JPEG, train/<wnid>/<wnid>_boxes.txt
    val/images/val_<k>.JPEG, val/val_annotations.txt      (classes interleaved, as in the real one)

The folder is built under a temporary name beside ``out`` and renamed into place, so an
interrupted run never leaves a half dataset. ``python -m data.synthetic --help`` for the CLI.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core.cli import ArgumentParser

SHAPES = ("circle", "square", "triangle", "cross", "star")
HUES = {"red": 0.0, "lime": 0.25, "cyan": 0.5, "violet": 0.75}
STYLES = ("solid", "outline", "striped", "checked", "dotted")
MAX_CLASSES = len(SHAPES) * len(HUES) * len(STYLES)
FORMAT_VERSION = 1  # bump when drawing changes, so stale default datasets are regenerated
DEFAULTS = {"classes": 20, "train_per_class": 40, "val_per_class": 10, "size": 64, "seed": 0}
_SUPERSAMPLE = 2  # draw at 2x and downscale: antialiased edges without per-shape AA code


def wnid(c: int) -> str:
    """Fake wnid of class ``c``; sorts in class order."""
    return f"n{c:08d}"


def class_name(c: int) -> str:
    """Human-readable name of class ``c``, e.g. ``"red solid circle"``."""
    hue = list(HUES)[c // len(SHAPES) % len(HUES)]
    return f"{hue} {STYLES[c // (len(SHAPES) * len(HUES))]} {SHAPES[c % len(SHAPES)]}"


def _outline(shape: str, rng: np.random.Generator, s: int) -> np.ndarray:
    """Polygon (k x 2 float, canvas pixels) of ``shape`` at a random pose inside an s x s canvas."""
    if shape == "circle":
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape in ("square", "triangle"):
        k = 4 if shape == "square" else 3
        t = np.arange(k) * 2 * math.pi / k
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "cross":
        a = 0.36  # arm half-width relative to the arm length
        q = [(a, a), (1, a), (1, -a), (a, -a)]  # one arm; rotate it 4 times
        pts = np.concatenate([np.array(q) @ _rot(k * math.pi / 2).T for k in range(4)])
    else:  # star: 5 points, inner radius 0.45
        t = np.arange(10) * math.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    pts = pts * [1.0, rng.uniform(0.75, 1.0)]  # aspect jitter, then rotate, scale, place
    pts = pts @ _rot(rng.uniform(0, 2 * math.pi)).T
    radius = rng.uniform(0.2, 0.34) * s
    centre = rng.uniform(0.32, 0.68, size=2) * s
    return pts * radius + centre


def _rot(theta: float) -> np.ndarray:
    return np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _texture(style: str, colour: tuple[int, int, int], rng: np.random.Generator, s: int):
    """s x s RGB fill for ``style``: the colour alternating with a darker shade of it."""
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    period = rng.uniform(0.1, 0.16) * s
    if style == "striped":
        theta = rng.uniform(0, math.pi)
        on = ((xx * math.cos(theta) + yy * math.sin(theta)) // (period / 2)) % 2 == 0
    elif style == "checked":
        on = ((xx // (period / 2)) + (yy // (period / 2))) % 2 == 0
    elif style == "dotted":
        on = np.hypot(xx % period - period / 2, yy % period - period / 2) < period * 0.3
    else:
        on = np.ones((s, s), bool)
    base = np.array(colour, np.float64)
    img = np.where(on[..., None], base, base * 0.3)
    return Image.fromarray(img.astype(np.uint8))


def draw_image(c: int, rng: np.random.Generator, size: int) -> tuple[Image.Image, tuple]:
    """One image of class ``c``: (RGB image size x size, bounding box x0, y0, x1, y1)."""
    s = size * _SUPERSAMPLE
    # Background: a low-saturation colour with smooth blotches, so colour stays the object's cue.
    bg = np.array(_rgb(rng.uniform(), rng.uniform(0, 0.25), rng.uniform(0.3, 0.9)), np.float64)
    blotch = Image.fromarray(rng.uniform(-40, 40, (4, 4)).astype(np.float32))
    blotch = np.asarray(blotch.resize((s, s), Image.Resampling.BILINEAR))
    canvas = Image.fromarray(np.clip(bg + blotch[..., None], 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(0, 3)):  # distractor lines
        grey = int(rng.integers(0, 256))
        end_points = [tuple(p) for p in rng.uniform(0, s, (2, 2))]
        draw.line(end_points, fill=(grey, grey, grey), width=int(rng.integers(1, 4)))

    shape = SHAPES[c % len(SHAPES)]
    hue = list(HUES.values())[c // len(SHAPES) % len(HUES)]
    style = STYLES[c // (len(SHAPES) * len(HUES))]
    colour = _rgb(hue + rng.normal(0, 0.02), rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))
    pts = _outline(shape, rng, s)
    poly = [tuple(p) for p in pts]
    mask = Image.new("L", (s, s), 0)
    mask_draw = ImageDraw.Draw(mask)
    if style == "outline":
        mask_draw.line([*poly, poly[0]], fill=255, width=max(2, round(s * 0.05)), joint="curve")
    else:
        mask_draw.polygon(poly, fill=255)
    canvas.paste(_texture(style, colour, rng, s), (0, 0), mask)

    img = canvas.resize((size, size), Image.Resampling.BOX)
    noisy = np.asarray(img, np.float64) + rng.normal(0, rng.uniform(2, 8), (size, size, 3))
    img = Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
    lo = np.clip(np.floor(pts.min(0) / _SUPERSAMPLE), 0, size - 1).astype(int)
    hi = np.clip(np.ceil(pts.max(0) / _SUPERSAMPLE), 0, size - 1).astype(int)
    return img, (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))


def _write(root: Path, options: dict) -> None:
    classes, size, seed = options["classes"], options["size"], options["seed"]
    n_train, n_val = options["train_per_class"], options["val_per_class"]
    names = [wnid(c) for c in range(classes)]
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in names), encoding="utf-8")
    (root / "words.txt").write_text(
        "".join(f"{wnid(c)}\t{class_name(c)}\n" for c in range(classes)), encoding="utf-8"
    )
    for c, w in enumerate(names):
        folder = root / "train" / w / "images"
        folder.mkdir(parents=True)
        boxes = []
        for k in range(n_train):
            img, box = draw_image(c, np.random.default_rng([seed, 0, c, k]), size)
            img.save(folder / f"{w}_{k}.JPEG", quality=90)
            boxes.append(f"{w}_{k}.JPEG\t" + "\t".join(map(str, box)) + "\n")
        (root / "train" / w / f"{w}_boxes.txt").write_text("".join(boxes), encoding="utf-8")
    # Val files are numbered in a seeded shuffled class order, like the real val/ folder.
    val_items = [(c, j) for c in range(classes) for j in range(n_val)]
    perm = np.random.default_rng([seed, 2]).permutation(len(val_items))
    (root / "val" / "images").mkdir(parents=True)
    rows = []
    for i, p in enumerate(perm):
        c, j = val_items[p]
        img, box = draw_image(c, np.random.default_rng([seed, 1, c, j]), size)
        img.save(root / "val" / "images" / f"val_{i}.JPEG", quality=90)
        rows.append(f"val_{i}.JPEG\t{wnid(c)}\t" + "\t".join(map(str, box)) + "\n")
    (root / "val" / "val_annotations.txt").write_text("".join(rows), encoding="utf-8")
    manifest = {"format_version": FORMAT_VERSION, **options}
    (root / "synthetic.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def generate(
    out: str | Path,
    classes: int = 20,
    train_per_class: int = 40,
    val_per_class: int = 10,
    size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the dataset to ``out`` atomically and return ``out``.

    If ``out`` exists: replaced when ``overwrite``, else ``FileExistsError``. If another process
    finishes the same folder first, its copy is kept (the content is identical).
    """
    if not 1 <= classes <= MAX_CLASSES:
        raise ValueError(f"classes must be in 1..{MAX_CLASSES}, got {classes}")
    if min(train_per_class, val_per_class, size) < 1 or seed < 0:
        raise ValueError("train/val counts and size must be >= 1, seed >= 0")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--force) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    options = dict(
        classes=classes,
        train_per_class=train_per_class,
        val_per_class=val_per_class,
        size=size,
        seed=seed,
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _write(tmp, options)
        if overwrite and out.exists():
            stale = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, stale / "d")
            shutil.rmtree(stale)
        try:
            os.rename(tmp, out)  # atomic: readers see no folder or a complete one
        except OSError:
            if not (out / "synthetic.json").is_file():
                raise
            # Another process won the race with the same options: keep its copy.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def default_dataset_dir() -> Path:
    """The default dataset folder: ``<repo>/data/generated/tiny-synthetic-20`` (git-ignored)."""
    return Path(__file__).resolve().parent / "generated" / "tiny-synthetic-20"


def _read_manifest(path: Path) -> object:
    """The manifest's content, or None if it is missing or unreadable (then the folder is
    regenerated: it is ours, not the user's)."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):  # missing, a folder, not UTF-8 (UnicodeDecodeError), not JSON
        return None


def ensure_default_dataset() -> Path:
    """Return the default dataset folder, generating it first if absent or stale."""
    out = default_dataset_dir()
    manifest = out / "synthetic.json"
    wanted = {"format_version": FORMAT_VERSION, **DEFAULTS}
    if _read_manifest(manifest) == wanted:
        return out
    d = DEFAULTS
    print(
        f"generating the default synthetic dataset ({d['classes']} classes, "
        f"{d['train_per_class']} train + {d['val_per_class']} val per class, {d['size']}px) "
        f"in {out} ...",
        end="",
        file=sys.stderr,
        flush=True,
    )
    t0 = time.perf_counter()
    generate(out, overwrite=out.exists(), **d)
    print(f" done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m data.synthetic [--out DIR] [--classes N] ...``."""
    parser = ArgumentParser(
        prog="python -m data.synthetic",
        description="Write a procedurally drawn dataset in the TinyImageNet folder layout "
        "(wnids.txt, words.txt, train/<wnid>/images/*.JPEG, <wnid>_boxes.txt, val/images/*.JPEG, "
        "val/val_annotations.txt). Deterministic in the options; written atomically.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=default_dataset_dir(),
        help="folder to create (default: %(default)s)",
    )
    parser.add_argument(
        "--classes",
        type=int,
        default=DEFAULTS["classes"],
        help=f"1..{MAX_CLASSES} (default: %(default)s)",
    )
    parser.add_argument(
        "--train-per-class",
        type=int,
        default=DEFAULTS["train_per_class"],
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--val-per-class",
        type=int,
        default=DEFAULTS["val_per_class"],
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=DEFAULTS["size"],
        help="image side in pixels (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="(default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        out = generate(
            args.out,
            args.classes,
            args.train_per_class,
            args.val_per_class,
            args.size,
            args.seed,
            overwrite=args.force,
        )
    except (FileExistsError, ValueError) as exc:
        parser.error(str(exc))
    print(f"wrote {out} in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
