"""Training augmentations of the official ImageNet recipe, as pure numpy + Pillow transforms.

The official OverLoCK run trains with timm 0.6.12's pipeline (``train.py`` of the official repo,
prefetcher on): per image ``RandomResizedCropAndInterpolation`` -> horizontal flip ->
``RandAugment`` (uint8, in the loader workers); per batch ``FastCollateMixup`` (mixup/cutmix on
uint8 with rounding, soft targets with label smoothing folded in, in the workers); then, on the
normalised float batch, ``RandomErasing``. This module (with ``data.randaugment``) re-implements
each step with the same arithmetic and the same sequence of random draws as timm, but every draw
comes from a generator seeded from a named stream of ``data.streams`` (``Stream.TRANSFORM``,
``CHOICE``, ``ERASE``, ``ERASE_PIXELS``, ``MIX``) instead of process-global state, so two
processes, two frameworks and a resumed run get bit-identical batches whichever worker computes
them.

Every step is a pure function of its inputs and (seed, epoch, index): decoding, caching and
workers belong to ``data.loader``, which calls ``Augment.train_transform``, ``Augment.mix_shard``
and ``Augment.erase``.

Given the same generator state, each step returns exactly what timm returns
(``tests/data/test_augment.py`` checks it against timm; the cutmix box is 0.6.12's, which later
timm versions changed), except the flip coin and the erased pixels, which timm draws with torch:
here they have the same distributions. Cost at 224 px on one core: ~3 ms per image plus its
decoding; mixing ~0.15 s per 256 images (in the worker); erasing ~30 ms per 256 (main process).

Under data parallelism mixup/cutmix pairs image i with image N-1-i *of each process's shard*, as
timm's collate does per process; erasing and the per-image transform do not depend on sharding.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from data.images import IMAGENET_MEAN
from data.randaugment import INTERPOLATIONS, RandAugment, resample_filter
from data.streams import Stream, np_rng, py_rng


# --- per-image training transform ----------------------------------------------------------
def random_resized_crop_box(
    size: tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: random.Random,
) -> tuple[int, int, int, int]:
    """timm's ``RandomResizedCropAndInterpolation.get_params``: (top, left, height, width) of a
    crop of area ``scale`` x the image and aspect ``ratio`` (log-uniform); 10 tries, then the
    largest centred crop within ``ratio``. ``size`` is PIL's (width, height).
    """
    img_w, img_h = size
    area = img_w * img_h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if w <= img_w and h <= img_h:
            return rng.randint(0, img_h - h), rng.randint(0, img_w - w), h, w
    in_ratio = img_w / img_h
    if in_ratio < min(ratio):
        w, h = img_w, int(round(img_w / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(img_h * max(ratio))), img_h
    else:
        w, h = img_w, img_h
    return (img_h - h) // 2, (img_w - w) // 2, h, w


class TrainTransform:
    """Per-image training transform of the recipe: random resized crop -> flip -> RandAugment.

    ``transform(image, seed, epoch, index)`` -> ``img_size`` x ``img_size`` x 3 uint8 RGB, a pure
    function of its arguments (generators from ``Stream.TRANSFORM`` and ``Stream.CHOICE``).

    Args:
        img_size: output side.
        scale, ratio: crop area fraction and aspect range (timm defaults).
        interpolation: resize filter of the crop (and of RandAugment's geometric ops):
            ``"random"`` (official: bilinear or bicubic per image), ``"bilinear"``, ``"bicubic"``.
        hflip: probability of a left-right flip.
        auto_augment: RandAugment config (``""``: none).
        mean: dataset mean (RandAugment's fill colour).
    """

    def __init__(
        self,
        img_size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "random",
        hflip: float = 0.5,
        auto_augment: str = "",
        mean: Sequence[float] = IMAGENET_MEAN,
    ) -> None:
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}")
        self.img_size = int(img_size)
        self.scale, self.ratio, self.hflip = tuple(scale), tuple(ratio), float(hflip)
        self.interpolation = INTERPOLATIONS[interpolation]
        self.rand_augment = RandAugment(auto_augment, mean, interpolation) if auto_augment else None

    def __call__(self, img: Image.Image, seed: int, epoch: int, index: int) -> np.ndarray:
        """Decoded image ``index`` of the dataset -> ``img_size`` x ``img_size`` x 3 uint8 RGB."""
        if img.mode != "RGB":
            img = img.convert("RGB")
        rng = py_rng(seed, epoch, Stream.TRANSFORM, index)
        top, left, h, w = random_resized_crop_box(img.size, self.scale, self.ratio, rng)
        resample = resample_filter(self.interpolation, rng)
        s = self.img_size
        img = img.crop((left, top, left + w, top + h)).resize((s, s), resample)
        if self.hflip > 0 and rng.random() < self.hflip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.rand_augment is not None:
            choice_rng = np_rng(seed, epoch, Stream.CHOICE, index)
            img = self.rand_augment(img, rng, choice_rng)
        return np.array(img, dtype=np.uint8)


# --- batch-level steps -------------------------------------------------------------------------
def random_erase(
    images: np.ndarray,
    indices: np.ndarray,
    seed: int,
    epoch: int,
    prob: float = 0.25,
    mode: str = "pixel",
    max_count: int = 1,
    min_area: float = 0.02,
    max_area: float = 1 / 3,
    min_aspect: float = 0.3,
) -> np.ndarray:
    """timm's ``RandomErasing`` on a normalised float32 N x C x H x W batch, in place (returned).

    Image ``row`` (dataset index ``indices[row]``) is erased with probability ``prob``: 1 to
    ``max_count`` boxes of area ``[min_area, max_area] / count`` of the image and log-uniform
    aspect in ``[min_aspect, 1 / min_aspect]`` (10 tries each), filled with standard-normal noise
    per pixel (``"pixel"``), per channel (``"rand"``) or zeros (``"const"``).
    """
    if mode not in ("pixel", "rand", "const"):
        raise ValueError(f"erasing mode must be 'pixel', 'rand' or 'const', got {mode!r}")
    _, chans, img_h, img_w = images.shape
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    for row, index in enumerate(np.asarray(indices, dtype=np.int64)):
        rng = py_rng(seed, epoch, Stream.ERASE, index)
        if rng.random() > prob:
            continue
        pixel_rng = np_rng(seed, epoch, Stream.ERASE_PIXELS, index)
        count = 1 if max_count == 1 else rng.randint(1, max_count)
        for _ in range(count):
            for _attempt in range(10):
                target_area = rng.uniform(min_area, max_area) * img_h * img_w / count
                aspect = math.exp(rng.uniform(*log_aspect))
                h = int(round(math.sqrt(target_area * aspect)))
                w = int(round(math.sqrt(target_area / aspect)))
                if w < img_w and h < img_h:
                    top, left = rng.randint(0, img_h - h), rng.randint(0, img_w - w)
                    shape = (chans, h, w) if mode == "pixel" else (chans, 1, 1)
                    fill = pixel_rng.standard_normal(shape) if mode != "const" else 0.0
                    images[row, :, top : top + h, left : left + w] = fill
                    break
    return images


def mixup_target(
    labels: np.ndarray, num_classes: int, lam: float = 1.0, smoothing: float = 0.0
) -> np.ndarray:
    """Soft targets float32 N x C: ``lam`` x smoothed one-hot(label) + (1 - lam) x that of the
    reversed batch; smoothing puts ``smoothing / C`` on every class (timm ``mixup_target``, and
    with ``lam = 1`` the target of ``CrossEntropyLoss(label_smoothing=smoothing)``).
    """
    labels = np.asarray(labels, dtype=np.int64)
    off = smoothing / num_classes
    one_hot = np.full((len(labels), num_classes), np.float32(off), dtype=np.float32)
    one_hot[np.arange(len(labels)), labels] = np.float32(1.0 - smoothing + off)
    if lam == 1.0:
        return one_hot
    return one_hot * np.float32(lam) + one_hot[::-1] * np.float32(1.0 - lam)


def cutmix_box(
    height: int, width: int, lam: float, rng: np.random.RandomState
) -> tuple[tuple[int, int, int, int], float]:
    """timm 0.6.12's ``rand_bbox`` + lambda correction: a box of side ``cut = sqrt(1 - lam)`` x
    the image, ``[c - cut // 2, c + cut // 2)`` around a uniform centre ``c`` (timm >= 0.9 ends it
    at ``c + (cut + 1) // 2``; the official run used 0.6.12), clipped to the image; returns
    ((y0, y1, x0, x1), 1 - box area fraction), the weight of the image's own label.
    """
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = rng.randint(0, height), rng.randint(0, width)
    y0, y1 = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
    x0, x1 = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
    return (y0, y1, x0, x1), 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)


def mix_batch(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    rng: np.random.RandomState,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    smoothing: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, float]:
    """timm's ``FastCollateMixup`` in ``"batch"`` mode on uint8 N x C x H x W: one lambda per
    batch, image i mixed with image N-1-i. With probability ``prob`` mix; then cutmix with
    probability ``switch_prob`` (lambda ~ Beta(cutmix_alpha), corrected to the clipped box) else
    mixup (lambda ~ Beta(mixup_alpha); blended in float32 and rounded to uint8).
    Returns (mixed uint8 images, soft targets float32 N x C, lambda).
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        raise ValueError("mix_batch needs mixup_alpha > 0 or cutmix_alpha > 0")
    lam, use_cutmix = 1.0, False
    if rng.rand() < prob:
        if mixup_alpha > 0 and cutmix_alpha > 0:
            use_cutmix = bool(rng.rand() < switch_prob)
            alpha = cutmix_alpha if use_cutmix else mixup_alpha
        else:
            use_cutmix = cutmix_alpha > 0
            alpha = cutmix_alpha if use_cutmix else mixup_alpha
        lam = float(rng.beta(alpha, alpha))
    if use_cutmix:
        (y0, y1, x0, x1), lam = cutmix_box(images.shape[-2], images.shape[-1], lam, rng)
    if lam != 1.0:
        if use_cutmix:
            images = images.copy()
            images[:, :, y0:y1, x0:x1] = images[::-1, :, y0:y1, x0:x1]
        else:
            mixed = images.astype(np.float32) * np.float32(lam)
            mixed += images[::-1].astype(np.float32) * np.float32(1.0 - lam)
            images = np.rint(mixed, out=mixed).astype(np.uint8)
    return images, mixup_target(labels, num_classes, lam, smoothing), lam


# --- settings the loader applies -----------------------------------------------------------
@dataclass(frozen=True)
class Augment:
    """Training augmentations for ``BatchLoader(augment=...)``; all off by default.

    ``random_resized_crop`` replaces the loader's resize + flip by ``TrainTransform`` on the
    decoded original (``hflip``, ``interpolation``, ``auto_augment`` belong to it); otherwise the
    plain resized + flipped images are used. Then mixup/cutmix (if either alpha > 0) on the uint8
    shard, normalisation, random erasing (``reprob`` > 0). Targets are soft (float32 N x C) if
    mixing or ``smoothing`` > 0, else the int64 labels. ``recipe.Recipe.augment()`` gives the
    official settings.
    """

    random_resized_crop: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "random"
    hflip: float = 0.5
    auto_augment: str = ""
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    smoothing: float = 0.0
    reprob: float = 0.0
    remode: str = "pixel"
    recount: int = 1

    def __post_init__(self) -> None:
        if self.auto_augment and not self.random_resized_crop:
            raise ValueError("auto_augment is part of the random-resized-crop transform")
        for name in ("hflip", "mix_prob", "switch_prob", "smoothing", "reprob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.mixup < 0 or self.cutmix < 0 or self.recount < 1:
            raise ValueError("mixup and cutmix alphas must be >= 0 and recount >= 1")
        if self.remode not in ("pixel", "rand", "const"):
            raise ValueError(f"remode must be 'pixel', 'rand' or 'const', got {self.remode!r}")
        self.train_transform(32)  # validates interpolation and the RandAugment config

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is on (otherwise the loader's plain path runs)."""
        return self.random_resized_crop or self.mixing or self.smoothing > 0 or self.reprob > 0

    @property
    def mixing(self) -> bool:
        """Whether mixup or cutmix is on."""
        return self.mixup > 0 or self.cutmix > 0

    @property
    def soft_targets(self) -> bool:
        """Whether batches carry float32 N x C targets instead of int64 labels."""
        return self.mixing or self.smoothing > 0

    def train_transform(self, img_size: int) -> TrainTransform:
        """The per-image transform for ``img_size`` outputs."""
        return TrainTransform(
            img_size, self.scale, self.ratio, self.interpolation, self.hflip, self.auto_augment
        )

    def mix_shard(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        num_classes: int,
        seed: int,
        epoch: int,
        mix_index: int,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Mixup/cutmix of a uint8 N x 3 x S x S training shard and its targets: (images, soft
        targets float32 N x C, or None when ``soft_targets`` is off). ``mix_index`` = batch *
        world_size + rank seeds the mixing (``Stream.MIX``).
        """
        if self.mixing:
            rng = np_rng(seed, epoch, Stream.MIX, mix_index)
            images, targets, _ = mix_batch(
                images, labels, num_classes, rng, self.mixup, self.cutmix,
                self.mix_prob, self.switch_prob, self.smoothing,
            )  # fmt: skip
            return images, targets
        if self.smoothing > 0:
            return images, mixup_target(labels, num_classes, 1.0, self.smoothing)
        return images, None

    def erase(self, images: np.ndarray, indices: np.ndarray, seed: int, epoch: int) -> np.ndarray:
        """Random erasing of the normalised batch (in the calling process), if ``reprob`` > 0."""
        if self.reprob > 0:
            random_erase(images, indices, seed, epoch, self.reprob, self.remode, self.recount)
        return images
