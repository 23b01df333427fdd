"""The bottom of ``data``: image decoding, the dataset errors and the normalisation constants.

Every other module of ``data`` builds on these; this one imports only ``core`` (its errors),
numpy and Pillow.

- Decoding: ``decode_rgb`` (a whole file as an RGB PIL image) and ``decode_image`` (the same,
  resized to a square with ``RESAMPLE``); an unreadable file raises ``CorruptImageError``
  naming it. Grayscale, CMYK, palette and alpha images all become RGB.
- Errors: ``DatasetError`` (an unusable dataset folder; an ``InputError``, so the scripts report
  it as one line) and its subclass ``CorruptImageError`` (one undecodable file). Warnings:
  ``DataWarning`` (usable data the user should know about), shown as one line
  ``warning: <message>`` wherever Python shows warnings (stderr by default).
- Normalisation: ``IMAGENET_MEAN`` / ``IMAGENET_STD``, ``normalize`` (uint8 -> float32, the
  same bits on every machine and framework) and ``MEAN_RGB_UINT8``, the stand-in colour of an
  undecodable image.
- Folder listing: ``IMAGE_SUFFIXES``, ``natural_key`` and ``image_names`` (the image files of
  one folder in natural order), shared by the dataset readers.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESAMPLE = Image.Resampling.BILINEAR  # decode_image's resize filter
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})

# normalize() computes float32(v) * _SCALE[c] + _SHIFT[c]: two IEEE float32 roundings (numpy does
# not fuse separate ufuncs into an FMA), so the result is identical on every machine and framework
# and within 1e-6 of (v / 255 - mean) / std.
_SCALE = (1.0 / (255.0 * np.array(IMAGENET_STD))).astype(np.float32)[:, None, None]
_SHIFT = (-np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD)).astype(np.float32)[:, None, None]
# The uint8 colour that normalises to ~0: the stand-in for an undecodable image.
MEAN_RGB_UINT8 = np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8)


class DatasetError(InputError):
    """The dataset folder is unusable (missing/malformed file, too few classes, bad image)."""


class DataWarning(RuntimeWarning):
    """Usable data with something the user should know (skipped annotations, a substituted
    image); shown as the one line ``warning: <message>``."""


_format_other_warning = warnings.formatwarning


def _format_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    # Python's format names the source file and line and repeats the warn() call: two lines
    # about our code, where the user needs one about their data.
    if issubclass(category, DataWarning):
        return f"warning: {message}\n"
    return _format_other_warning(message, category, filename, lineno, line)


warnings.formatwarning = _format_warning


class CorruptImageError(DatasetError):
    """One image file cannot be decoded; ``path`` names it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"cannot decode image {path} ({reason}); replace or delete the file (training "
            "without --strict-data substitutes a mean-colour image and goes on)"
        )
        self.path, self.reason = path, reason

    def __reduce__(self) -> tuple:
        # Exceptions pickle as cls(*args); ours has a different signature. Workers send it back.
        return (type(self), (self.path, self.reason))


def natural_key(name: str) -> tuple[str | int, ...]:
    """Sort key that orders digit runs numerically: ``x_2`` before ``x_10``."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def image_names(folder: Path) -> list[str]:
    """Names of the image files (``IMAGE_SUFFIXES``, any case) directly in ``folder``, in
    natural order."""
    names = (p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(names, key=natural_key)


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 N x 3 x H x W -> float32 ``(x / 255 - mean) / std`` per channel (ImageNet stats)."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 N x 3 x H x W, got {images.dtype} {images.shape}")
    out = images.astype(np.float32)
    out *= _SCALE
    out += _SHIFT
    return out


def decode_rgb(path: str | Path) -> Image.Image:
    """Decode a whole file as an RGB PIL image; ``CorruptImageError`` (naming it) if unreadable."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # forces a full decode, so truncation surfaces here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(str(path), f"{type(exc).__name__}: {exc}") from exc


def decode_image(path: str | Path, img_size: int) -> np.ndarray:
    """Decode one file to an ``img_size`` x ``img_size`` x 3 uint8 RGB array (resized with
    ``RESAMPLE`` unless already that size); ``CorruptImageError`` if Pillow cannot read all of it.
    """
    rgb = decode_rgb(path)
    if rgb.size != (img_size, img_size):
        rgb = rgb.resize((img_size, img_size), RESAMPLE)
    return np.asarray(rgb, dtype=np.uint8)
