"""timm's RandAugment on RGB PIL images, with explicit generators (numpy + Pillow only).

The same ops, level functions and sequence of draws as timm 0.6.12's ``rand_augment_transform``,
but each draw comes from the ``random.Random`` / ``numpy.random.RandomState`` it is given
(``data.augment.TrainTransform`` seeds them from streams 3 and 4 of ``data.streams``) instead of
the process-global generators. ``tests/data/test_augment.py`` checks it against timm draw for
draw. Also the interpolation names shared with the per-image transform.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from data.images import IMAGENET_MEAN

BILINEAR, BICUBIC = Image.Resampling.BILINEAR, Image.Resampling.BICUBIC
INTERPOLATIONS = {"bilinear": BILINEAR, "bicubic": BICUBIC, "random": (BILINEAR, BICUBIC)}
_LEVEL_DENOM = 10.0  # timm: magnitude M is the fraction M / 10 of each op's range


def resample_filter(
    interpolation: Image.Resampling | tuple, rng: random.Random
) -> Image.Resampling:
    """``interpolation``, or one of its filters drawn with ``rng`` if it is a tuple."""
    # timm picks one of (bilinear, bicubic) per call when the interpolation is "random".
    return rng.choice(interpolation) if isinstance(interpolation, tuple) else interpolation


def _negate(value: float, rng: random.Random) -> float:
    return -value if rng.random() > 0.5 else value


def _enhance_increasing(m: float, rng: random.Random) -> tuple[float]:
    return (max(0.1, 1.0 + _negate((m / _LEVEL_DENOM) * 0.9, rng)),)


# Level functions: magnitude (0..10) -> op arguments, exactly timm's arithmetic and draw order.
_LEVELS: dict[str, Callable[[float, random.Random], tuple]] = {
    "AutoContrast": lambda m, rng: (),
    "Equalize": lambda m, rng: (),
    "Invert": lambda m, rng: (),
    "Rotate": lambda m, rng: (_negate((m / _LEVEL_DENOM) * 30.0, rng),),
    "Posterize": lambda m, rng: (int((m / _LEVEL_DENOM) * 4),),
    "PosterizeIncreasing": lambda m, rng: (4 - int((m / _LEVEL_DENOM) * 4),),
    "Solarize": lambda m, rng: (int((m / _LEVEL_DENOM) * 256),),
    "SolarizeIncreasing": lambda m, rng: (256 - int((m / _LEVEL_DENOM) * 256),),
    "SolarizeAdd": lambda m, rng: (int((m / _LEVEL_DENOM) * 110),),
    "Color": lambda m, rng: ((m / _LEVEL_DENOM) * 1.8 + 0.1,),
    "ColorIncreasing": _enhance_increasing,
    "Contrast": lambda m, rng: ((m / _LEVEL_DENOM) * 1.8 + 0.1,),
    "ContrastIncreasing": _enhance_increasing,
    "Brightness": lambda m, rng: ((m / _LEVEL_DENOM) * 1.8 + 0.1,),
    "BrightnessIncreasing": _enhance_increasing,
    "Sharpness": lambda m, rng: ((m / _LEVEL_DENOM) * 1.8 + 0.1,),
    "SharpnessIncreasing": _enhance_increasing,
    "ShearX": lambda m, rng: (_negate((m / _LEVEL_DENOM) * 0.3, rng),),
    "ShearY": lambda m, rng: (_negate((m / _LEVEL_DENOM) * 0.3, rng),),
    "TranslateXRel": lambda m, rng: (_negate((m / _LEVEL_DENOM) * 0.45, rng),),
    "TranslateYRel": lambda m, rng: (_negate((m / _LEVEL_DENOM) * 0.45, rng),),
}
# timm's _RAND_TRANSFORMS (inc0) and _RAND_INCREASING_TRANSFORMS (inc1), in timm's order: the
# op choice draws an index into this list.
RAND_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
    "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
    "TranslateYRel",
)  # fmt: skip
RAND_INCREASING_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
    "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
    "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)  # fmt: skip
_ENHANCERS = {
    "Color": ImageEnhance.Color,
    "Contrast": ImageEnhance.Contrast,
    "Brightness": ImageEnhance.Brightness,
    "Sharpness": ImageEnhance.Sharpness,
}


class RandAugment:
    """timm's ``rand_augment_transform(config, hparams)`` on RGB PIL images, with explicit
    generators instead of the global ``random``/``np.random`` (same draws in the same order).

    Args:
        config: timm's config string, ``rand-m<M>[-n<N>][-mstd<S>][-mmax<X>][-inc<0|1>]``
            (official: ``rand-m9-mstd0.5-inc1``: 2 ops, magnitude ~ N(9, 0.5) clipped to [0, 10],
            ops whose severity increases with the magnitude).
        mean: fill colour of geometric ops = round(255 * mean), as timm's ``img_mean`` hparam.
        interpolation: of the geometric ops; ``"random"`` picks bilinear or bicubic per op (timm
            does this when the training interpolation is "random", as in the official run).
    """

    def __init__(
        self,
        config: str,
        mean: Sequence[float] = IMAGENET_MEAN,
        interpolation: str = "random",
    ) -> None:
        self.config = config
        sections = config.split("-")
        if sections[0] != "rand":
            raise ValueError(f"RandAugment config must start with 'rand', got {config!r}")
        self.magnitude, self.num_layers, self.magnitude_std = _LEVEL_DENOM, 2, 0.0
        self.magnitude_max: float | None = None
        increasing = False
        for section in sections[1:]:
            key, val, *_ = re.split(r"(\d.*)", section) + [""]
            if key == "m":
                self.magnitude = int(val)
            elif key == "n":
                self.num_layers = int(val)
            elif key == "mstd":  # timm: above 100 means uniform in [0, M]
                self.magnitude_std = math.inf if float(val) > 100 else float(val)
            elif key == "mmax":
                self.magnitude_max = int(val)
            elif key == "inc":
                increasing = bool(int(val))
            else:
                raise ValueError(f"unsupported RandAugment section {section!r} in {config!r}")
        self.ops = RAND_INCREASING_OPS if increasing else RAND_OPS
        self.fill = tuple(min(255, round(255 * x)) for x in mean)
        self.interpolation = INTERPOLATIONS[interpolation]

    def __call__(
        self, img: Image.Image, rng: random.Random, np_rng: np.random.RandomState
    ) -> Image.Image:
        """Apply ``num_layers`` ops drawn with replacement, each with probability 0.5."""
        for k in np_rng.choice(len(self.ops), self.num_layers, replace=True):
            img = self._apply(self.ops[k], img, rng)
        return img

    def _apply(self, name: str, img: Image.Image, rng: random.Random) -> Image.Image:
        if rng.random() > 0.5:  # timm AugmentOp, prob 0.5
            return img
        m = self.magnitude
        if self.magnitude_std == math.inf:
            m = rng.uniform(0, m)
        elif self.magnitude_std > 0:
            m = rng.gauss(m, self.magnitude_std)
        m = max(0.0, min(m, self.magnitude_max or _LEVEL_DENOM))
        args = _LEVELS[name](m, rng)
        base = name.removesuffix("Increasing")
        if base in _ENHANCERS:
            return _ENHANCERS[base](img).enhance(*args)
        if base == "AutoContrast":
            return ImageOps.autocontrast(img)
        if base == "Equalize":
            return ImageOps.equalize(img)
        if base == "Invert":
            return ImageOps.invert(img)
        if base == "Posterize":
            return img if args[0] >= 8 else ImageOps.posterize(img, args[0])
        if base == "Solarize":
            return ImageOps.solarize(img, args[0])
        if base == "SolarizeAdd":  # add to pixels below 128, saturating
            lut = [min(255, i + args[0]) if i < 128 else i for i in range(256)]
            return img.point(lut * len(img.getbands()))
        resample = resample_filter(self.interpolation, rng)
        if base == "Rotate":
            return img.rotate(args[0], resample=resample, fillcolor=self.fill)
        w, h = img.size
        matrix = {
            "ShearX": (1, args[0], 0, 0, 1, 0),
            "ShearY": (1, 0, 0, args[0], 1, 0),
            "TranslateXRel": (1, 0, args[0] * w, 0, 1, 0),
            "TranslateYRel": (1, 0, 0, 0, 1, args[0] * h),
        }[base]
        return img.transform(
            img.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=self.fill
        )
