"""The one image decoder of aesipe (Pillow): the datasets, ``make-cam`` and ``aesipe-label`` read alike.

Every readable image becomes uint8 RGB, upright (EXIF orientation applied): grayscale, palette,
RGBA/LA (alpha dropped: the colour under it is kept, as torchvision's RGB read mode does), CMYK,
16-bit and float images are converted. Images whose long side exceeds ``max_side`` are decoded at a
reduced size (JPEG draft mode, then a high-quality resize); the caller labels that and resizes the
result back to ``original_size``. Empty, truncated and non-image files raise ``ImageReadError`` with
a short reason.

Pillow refuses images over ``2 * Image.MAX_IMAGE_PIXELS`` (~179 Mpx) as "decompression bombs". aesipe's
own reads allow up to 1 Gpx (it decodes huge images at reduced size); the limit is raised only while an
aesipe read is in progress and restored afterwards, so an app that embeds aesipe keeps its own setting
for its own reads.
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .constants import IMAGE_SUFFIXES

DEFAULT_MAX_SIDE = 2048
MAX_PIXELS = 1_000_000_000
"""Largest image aesipe reads (the largest a 24 GiB machine decodes comfortably in draft mode)."""
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees
_EXIF_ORIENTATION = 0x0112
_limit_lock = threading.Lock()
_limit_users = 0
_saved_limit: int | None = None


@contextlib.contextmanager
def _large_images_allowed() -> Iterator[None]:
    """Raise Pillow's global pixel limit to MAX_PIXELS while any aesipe read runs (thread-safe)."""
    global _limit_users, _saved_limit
    with _limit_lock:
        if _limit_users == 0:
            _saved_limit = Image.MAX_IMAGE_PIXELS
            if _saved_limit is not None and _saved_limit < MAX_PIXELS:
                Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        _limit_users += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _saved_limit


class ImageReadError(Exception):
    """The file has an image extension but cannot be labelled; ``str(exc)`` is the reason."""


@dataclass
class DecodedImage:
    rgb: np.ndarray
    """uint8 [h, w, 3] at working resolution (== original_size unless the image exceeded max_side)."""
    original_size: tuple[int, int]
    """(height, width) after EXIF orientation: the size the label map is written at."""


def is_image_name(name: str) -> bool:
    """A file name aesipe reads as an image: an image suffix, not hidden."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def is_image_file(path: Path) -> bool:
    return is_image_name(Path(path).name)


def strip_image_suffix(name: str) -> str:
    """``a/b.JPG`` -> ``a/b``; names without an image suffix are returned as they are."""
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, PA, LA, RGBA, CMYK, YCbCr, LAB, HSV
    return np.array(image, dtype=np.uint8)  # a writable copy (callers such as the CRF write into it)


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF: Pillow's exif_transpose ignores it too
        orientation = 1
    return (width, height) if orientation in _SWAPS_AXES else (height, width)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image as ``read_image`` returns it (EXIF orientation applied), header only."""
    with _large_images_allowed(), Image.open(path) as image:
        return _oriented_size(image)


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    height, width = size
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_image(path: Path, max_side: int | None = DEFAULT_MAX_SIDE) -> DecodedImage:
    """Decode ``path`` into upright uint8 RGB; see the module docstring."""
    try:
        if path.stat().st_size == 0:
            raise ImageReadError("empty file")
        with warnings.catch_warnings(), _large_images_allowed():
            warnings.simplefilter("ignore")  # EXIF/ICC warnings; real failures raise
            with Image.open(path) as image:
                original = _oriented_size(image)
                capped = max_side is not None and max(original) > max_side
                if capped and image.format == "JPEG":
                    target = _fit(original, max_side)
                    image.draft("RGB", (max(target) * 2, max(target) * 2))  # at least 2x target: resize below
                image.load()
                image = ImageOps.exif_transpose(image)
                rgb = _to_rgb_array(image)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError("not an image Pillow can read") from None
    except Image.DecompressionBombError:
        raise ImageReadError(f"larger than {MAX_PIXELS} pixels") from None
    except FileNotFoundError:
        raise ImageReadError("file not found") from None
    except IsADirectoryError:
        raise ImageReadError("a folder, not an image file") from None
    except PermissionError:
        raise ImageReadError("permission denied") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"truncated or corrupt ({str(exc).splitlines()[0][:120]})") from None
    if capped:
        height, width = _fit(original, max_side)
        if rgb.shape[:2] != (height, width):
            rgb = np.array(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR,
                                                       reducing_gap=2.0))
    elif rgb.shape[:2] != original:
        raise ImageReadError(f"decoded size {rgb.shape[:2]} differs from the header's {original}")
    return DecodedImage(np.ascontiguousarray(rgb), original)


def read_rgb(path: Path) -> np.ndarray:
    """uint8 H x W x 3 RGB at full size (``read_image`` without a size cap); raises ``ImageReadError``."""
    return read_image(Path(path), None).rgb
