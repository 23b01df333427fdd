"""Tests of the recipe's training augmentations (data/augment.py, data/randaugment.py) and their
loader integration: each step against timm draw for draw, hand-checked small cases, and
determinism."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm.data.mixup
import torch
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from timm.data.mixup import FastCollateMixup
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import RandomResizedCropAndInterpolation

from data import synthetic
from data.augment import (
    Augment,
    TrainTransform,
    cutmix_box,
    mix_batch,
    mixup_target,
    random_erase,
    random_resized_crop_box,
)
from data.loader import BatchLoader
from data.randaugment import BICUBIC, BILINEAR, RandAugment
from data.streams import Stream, counter_hash
from data.tinyimagenet import TinyImageNet

REPO = Path(__file__).resolve().parents[2]
RECIPE = dict(
    random_resized_crop=True,
    auto_augment="rand-m9-mstd0.5-inc1",
    mixup=0.8,
    cutmix=1.0,
    smoothing=0.1,
    reprob=0.25,
)


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes x (6 train + 3 val) synthetic 32 px images in the TinyImageNet layout."""
    root = tmp_path_factory.mktemp("syn") / "ds"
    return synthetic.generate(root, classes=4, train_per_class=6, val_per_class=3, size=32, seed=1)


def noise_image(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), np.uint8))


# --- per-image transform vs timm -----------------------------------------------------------
@pytest.mark.parametrize("config", ["rand-m9-mstd0.5-inc1", "rand-m7-n3-mstd101-inc0"])
def test_rand_augment_matches_timm_draw_for_draw(config: str) -> None:
    # timm draws from the global random/np.random; ours from the generators it is given.
    img = noise_image(40, 48)
    theirs = rand_augment_transform(config, {"translate_const": 18, "img_mean": (124, 116, 104)})
    ours = RandAugment(config)
    for s in range(150):
        random.seed(s)
        np.random.seed(s)
        want = np.asarray(theirs(img))
        got = np.asarray(ours(img, random.Random(s), np.random.RandomState(s)))
        np.testing.assert_array_equal(got, want, err_msg=f"seed {s}")


def test_random_resized_crop_matches_timm_including_the_fallback() -> None:
    theirs = RandomResizedCropAndInterpolation(24, interpolation="random")
    for size in [(48, 40), (200, 6)]:  # a sliver forces the centred fallback crop
        img = noise_image(size[1], size[0])
        for s in range(60):
            random.seed(s)
            want = np.asarray(theirs(img))
            rng = random.Random(s)
            top, left, h, w = random_resized_crop_box(img.size, (0.08, 1.0), (3 / 4, 4 / 3), rng)
            resample = rng.choice((BILINEAR, BICUBIC))
            got = np.asarray(img.crop((left, top, left + w, top + h)).resize((24, 24), resample))
            np.testing.assert_array_equal(got, want, err_msg=f"{size} seed {s}")
    assert random_resized_crop_box((200, 6), (0.08, 1.0), (3 / 4, 4 / 3), random.Random(0)) == (
        0,
        96,
        6,
        8,  # fmt: skip
    )


def test_train_transform_is_a_pure_function_of_seed_epoch_and_index() -> None:
    transform = TrainTransform(16, auto_augment="rand-m9-mstd0.5-inc1")
    img = noise_image(30, 20)
    random.seed(123)
    np.random.seed(123)
    states = random.getstate(), np.random.get_state()[1].copy()
    keys = [(s, e, i) for s in (0, 1) for e in (0, 1) for i in range(6)]
    first = {k: transform(img, *k) for k in keys}
    again = {k: transform(img, *k) for k in reversed(keys)}  # another order, same outputs
    assert random.getstate() == states[0]  # no global generator is touched
    np.testing.assert_array_equal(np.random.get_state()[1], states[1])
    for k in keys:
        assert first[k].shape == (16, 16, 3) and first[k].dtype == np.uint8
        np.testing.assert_array_equal(first[k], again[k])
    assert len({first[k].tobytes() for k in keys}) == len(keys)


# --- mixup / cutmix / smoothing -----------------------------------------------------------
def test_mixup_of_two_one_hot_labels_with_a_known_lambda() -> None:
    targets = mixup_target(np.array([0, 2]), 4, lam=0.7)
    np.testing.assert_allclose(targets, [[0.7, 0, 0.3, 0], [0.3, 0, 0.7, 0]], atol=1e-7)
    smoothed = mixup_target(np.array([0, 2]), 4, lam=0.7, smoothing=0.1)  # on .925, off .025
    np.testing.assert_allclose(
        smoothed, [[0.655, 0.025, 0.295, 0.025], [0.295, 0.025, 0.655, 0.025]], atol=1e-7
    )
    assert targets.dtype == smoothed.dtype == np.float32


def test_label_smoothing_alone() -> None:
    targets = mixup_target(np.array([3, 0]), 10, smoothing=0.1)
    want = np.full((2, 10), 0.01, np.float32)
    want[0, 3] = want[1, 0] = 0.91
    np.testing.assert_array_equal(targets, want)
    np.testing.assert_allclose(targets.sum(1), 1, atol=1e-6)


class FixedCentre:
    """A stand-in generator whose randint returns fixed values (the cutmix box centre)."""

    def __init__(self, *values: int) -> None:
        self.values = list(values)

    def randint(self, low: int, high: int) -> int:
        return self.values.pop(0)


def test_cutmix_box_area_gives_the_corrected_lambda() -> None:
    # lam 0.75: side sqrt(0.25) * 10 = 5, half 5 // 2 = 2 -> box [c-2, c+2) (timm's 4-wide box).
    assert cutmix_box(10, 10, 0.75, FixedCentre(5, 5)) == ((3, 7, 3, 7), 1 - 16 / 100)
    # Clipped at the border: y [0, 2), x [7, 10) -> 6 pixels -> lambda 0.94.
    assert cutmix_box(10, 10, 0.75, FixedCentre(0, 9)) == ((0, 2, 7, 10), 0.94)


def rand_bbox_0_6_12(img_shape: tuple, lam: float, margin: float = 0.0, count: None = None):
    """timm 0.6.12's cutmix box (the official run's): [c - cut // 2, c + cut // 2) per side;
    timm >= 0.9 ends it at c + (cut + 1) // 2."""
    img_h, img_w = img_shape[-2:]
    cut_h, cut_w = int(img_h * np.sqrt(1 - lam)), int(img_w * np.sqrt(1 - lam))
    cy, cx = np.random.randint(0, img_h), np.random.randint(0, img_w)
    return (
        np.clip(cy - cut_h // 2, 0, img_h), np.clip(cy + cut_h // 2, 0, img_h),
        np.clip(cx - cut_w // 2, 0, img_w), np.clip(cx + cut_w // 2, 0, img_w),
    )  # fmt: skip


def test_mix_batch_matches_timm_fast_collate_mixup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timm.data.mixup, "rand_bbox", rand_bbox_0_6_12)
    rs = np.random.RandomState(0)
    images = rs.randint(0, 256, (6, 3, 12, 10), np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 0])
    theirs = FastCollateMixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=5)
    kinds = set()
    for s in range(12):
        np.random.seed(s)
        want_x, want_y = theirs([(x, int(y)) for x, y in zip(images, labels, strict=True)])
        got_x, got_y, lam = mix_batch(images, labels, 5, np.random.RandomState(s))
        np.testing.assert_array_equal(got_x, want_x.numpy())
        np.testing.assert_array_equal(got_y, want_y.numpy())
        # Cutmix: one box copied from the reversed batch, lambda = the untouched fraction.
        box = (got_x == images[::-1]).all(axis=(0, 1))
        is_cutmix = 0 < box.mean() < 1 and np.array_equal(
            np.where(box, images[::-1], images), got_x
        )
        if is_cutmix:
            assert 1 - box.mean() == pytest.approx(lam)
        kinds.add("cutmix" if is_cutmix else "mixup")
    assert kinds == {"mixup", "cutmix"}


# --- random erasing --------------------------------------------------------------------------
def test_random_erasing_matches_timm_boxes_and_is_deterministic_per_image() -> None:
    n, seed, epoch = 400, 5, 2
    indices = np.arange(100, 100 + n)
    base = np.random.RandomState(0).standard_normal((n, 3, 16, 12)).astype(np.float32) + 10
    ours = random_erase(base.copy(), indices, seed, epoch, mode="const")
    theirs = torch.from_numpy(base.copy())
    eraser = RandomErasing(0.25, mode="const", device="cpu")
    for row, index in enumerate(indices):
        random.seed(int(counter_hash(seed, epoch, Stream.ERASE, np.array([index]))[0]))
        eraser(theirs[row])
    np.testing.assert_array_equal(ours, theirs.numpy())
    erased = (ours == 0).any(axis=(1, 2, 3))
    assert 0.18 < erased.mean() < 0.32  # probability 0.25
    areas = (ours[erased] == 0).all(axis=1).mean(axis=(1, 2))
    assert areas.min() > 0.01 and areas.max() < 0.4  # 2% to 1/3 of the image, rounded boxes
    pixel = random_erase(base[:40].copy(), indices[:40], seed, epoch)  # official "pixel" mode
    changed = pixel != base[:40]
    np.testing.assert_array_equal(changed.any(axis=(1, 2, 3)), erased[:40])
    assert abs(pixel[changed].mean()) < 0.2 and abs(pixel[changed].std() - 1) < 0.2
    swapped = random_erase(base[[1, 0]].copy(), indices[[1, 0]], seed, epoch)
    np.testing.assert_array_equal(swapped, pixel[[1, 0]])  # keyed by image, not by position


# --- settings and the loader ---------------------------------------------------------------
def test_augment_settings_are_validated() -> None:
    assert not Augment().enabled
    with pytest.raises(ValueError, match="auto_augment"):
        Augment(auto_augment="rand-m9")
    with pytest.raises(ValueError, match="reprob"):
        Augment(reprob=1.5)
    with pytest.raises(ValueError, match="unsupported RandAugment section"):
        Augment(random_resized_crop=True, auto_augment="rand-m9-w0")
    with pytest.raises(ValueError, match="remode"):
        Augment(remode="noise")


def test_augmented_batches_are_identical_across_workers_instances_and_resume(syn: Path) -> None:
    children_before = set(mp.active_children())
    ds = TinyImageNet(syn, "train", 4, img_size=24)
    augment = Augment(**RECIPE)
    want = list(BatchLoader(ds, 6, seed=3, augment=augment).batches(1))
    assert len(want) == 4
    for images, targets in want:
        assert images.shape == (6, 3, 24, 24) and images.dtype == np.float32
        assert targets.shape == (6, 4) and targets.dtype == np.float32
        np.testing.assert_allclose(targets.sum(1), 1, atol=1e-6)
    with BatchLoader(ds, 6, seed=3, augment=augment, num_workers=2, prefetch=3) as pooled:
        got = list(pooled.batches(1))
        resumed = list(pooled.batches(1, start_batch=2))
    again = list(BatchLoader(ds, 6, seed=3, augment=augment).batches(1))
    for other in (got, again, [*want[:2], *resumed]):
        for (xa, ya), (xb, yb) in zip(want, other, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    other_epoch = next(iter(BatchLoader(ds, 6, seed=3, augment=augment).batches(2)))
    assert not np.array_equal(other_epoch[0], want[0][0])
    assert set(mp.active_children()) <= children_before


def test_plain_path_is_unchanged_without_augmentation(syn: Path) -> None:
    ds = TinyImageNet(syn, "train", 4, img_size=32)
    plain = list(BatchLoader(ds, 5, seed=2).batches(0))
    for augment in (None, Augment()):
        same = list(BatchLoader(ds, 5, seed=2, augment=augment).batches(0))
        for (xa, ya), (xb, yb) in zip(plain, same, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
            assert yb.dtype == np.int64
    # Smoothing only: the same images, soft targets of the same labels.
    smooth = list(BatchLoader(ds, 5, seed=2, augment=Augment(smoothing=0.1)).batches(0))
    for (xa, ya), (xb, yb) in zip(plain, smooth, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(yb, mixup_target(ya, 4, smoothing=0.1))
    cached = BatchLoader(ds, 5, seed=2, cache=True, augment=Augment(smoothing=0.1))
    for (xa, ya), (xb, yb) in zip(smooth, cached.batches(0), strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_mixing_happens_within_each_shard(syn: Path) -> None:
    ds = TinyImageNet(syn, "train", 4, img_size=16)
    augment = Augment(mixup=0.8)  # mixup only, no smoothing: targets show the pairing
    for rank in range(2):
        loader = BatchLoader(ds, 8, seed=1, rank=rank, world_size=2, augment=augment)
        for b, (_, targets) in enumerate(loader.batches(0)):
            labels = ds.labels[loader.batch_plan(0, b)[0]]
            differ = np.flatnonzero(labels != labels[::-1])  # rows that show lambda
            lam = targets[differ[0], labels[differ[0]]] if len(differ) else 1.0
            want = mixup_target(labels, 4, float(lam))
            np.testing.assert_allclose(targets, want, atol=1e-6)


def test_loader_refuses_augmenting_val_and_caching_random_crops(syn: Path) -> None:
    val = TinyImageNet(syn, "val", 4, img_size=16)
    with pytest.raises(ValueError, match="training loaders only"):
        BatchLoader(val, 4, augment=Augment(mixup=0.8))
    train = TinyImageNet(syn, "train", 4, img_size=16)
    with pytest.raises(ValueError, match="random resized crops"):
        BatchLoader(train, 4, cache=True, augment=Augment(random_resized_crop=True))


def test_framework_free_modules_import_no_framework() -> None:
    script = (
        "import sys\n"
        "import data, data.augment, data.datasets, data.loader, data.synthetic, engine.recipe\n"
        "print(sorted({'torch', 'jittor', 'timm'} & set(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.stdout.strip() == "[]", out.stderr
