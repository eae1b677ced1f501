"""The one image decoder of aesipe (Pillow): the datasets, ``make-cam`` and ``aesipe-label`` read alike.

Every readable image becomes uint8 RGB, upright (EXIF orientation applied): grayscale, palette,
RGBA/LA (alpha dropped: the colour under it is kept, as torchvision's RGB read mode does), CMYK,
16-bit and float images are converted. Images whose long side exceeds ``max_side`` are decoded at a
reduced size (JPEG draft mode, then a high-quality resize); the caller labels that and resizes the
result back to ``original_size``. Empty, truncated and non-image files raise ``ImageReadError`` with
a short reason.

Memory: a small file can declare a huge image (a 2 MB PNG of one colour decodes to gigabytes). Before any
pixel is decoded, the header says how much memory the decode will take (``decode_bytes``: the pixels
decoded, times what this decoder holds per pixel at its peak for that mode and format, measured; plus the
full-size DCT coefficients a progressive JPEG keeps even in draft mode). A decode that would take more
than ``MAX_DECODE_BYTES`` is decoded at reduced size where the format allows it (JPEG draft mode, when
the caller asked for ``max_side``) and refused with its reason (``ImageReadError``) otherwise, so one
image never takes the process down and the rest of a folder is labelled.

Pillow refuses images over ``2 * Image.MAX_IMAGE_PIXELS`` (~179 Mpx) as "decompression bombs". aesipe's
own reads allow headers up to ``MAX_PIXELS`` (the bound above is what protects them); the limit is raised
only while an aesipe read is in progress and restored afterwards, so an app that embeds aesipe keeps its
own setting for its own reads.
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

MAX_DECODE_BYTES = 2 * 1024**3
"""The most memory one image decode may take, in bytes (2 GiB). aesipe-label decodes with up to 4 threads at
once (``--workers``), so decoding alone stays within 8 GiB, a third of a 24 GiB machine, leaving the rest to
the model, its batches and the writers. At 15 bytes per RGB pixel it admits a 140 Mpx TIFF at full size (a PNG,
whose EXIF rotation is only known after decoding, 110 Mpx), and any baseline JPEG (up to 65535 x 65535) when a
``max_side`` lets draft mode decode it at 1/8."""
MAX_PIXELS = 65535 * 65535
"""Largest size a header may declare (the largest JPEG): larger ones are refused from the header."""
_PEAK_BYTES_PER_PIXEL = {
    **dict.fromkeys(("1", "L", "P"), 13),
    **dict.fromkeys(("RGB", "YCbCr", "LAB", "HSV"), 15),
    **dict.fromkeys(("RGBA", "RGBX", "RGBa", "CMYK", "LA", "La", "PA"), 19),
    **dict.fromkeys(("I;16", "I;16L", "I;16B", "I;16N"), 16),
    **dict.fromkeys(("I", "F"), 23),
}
"""Peak bytes ``read_image`` holds per decoded pixel, by mode (Pillow's buffer, the conversion, numpy's copy
through ``tobytes``), measured on 12 Mpx images: 1/L/P 12.1, RGB 14.1, RGBA/LA/CMYK 18.1, I;16 14.1, I 20.1,
F 21.2; rounded up. tests/core/test_decode_bound.py checks that they stay upper bounds."""
_UNKNOWN_MODE_BYTES = 23
_FIXED_BYTES = 8 * 1024**2
"""What a decode holds whatever the size (decoder state, tables, row buffers)."""
_TRANSPOSE_BYTES = 4
"""An EXIF rotation or flip makes one more Pillow image of the decoded size."""
_OWN_BUFFER_FORMATS = {"WEBP": 2}
"""Formats whose library decodes into its own full buffer before Pillow copies it (measured: 28 B/px)."""
_COEFFICIENT_BYTES = 2
"""A progressive JPEG keeps every DCT coefficient (int16) of every component at full size, draft or not."""
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees
_EXIF_ORIENTATION = 0x0112
_limit_lock = threading.Lock()
_limit_users = 0
_saved_limit: int | None = None


@contextlib.contextmanager
def _large_images_allowed() -> Iterator[None]:
    """Let Pillow open headers up to MAX_PIXELS while any aesipe read runs (thread-safe)."""
    global _limit_users, _saved_limit
    with _limit_lock:
        if _limit_users == 0:
            _saved_limit = Image.MAX_IMAGE_PIXELS
            if _saved_limit is not None and _saved_limit < MAX_PIXELS // 2:
                Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2  # Pillow refuses above twice its limit
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
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            np.nan_to_num(values, copy=False)
            top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        else:
            top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        # values / top * 255 + 0.5, clipped, in place: one float64 copy of the image, not five
        np.divide(values, top, out=values)
        np.multiply(values, 255.0, out=values)
        np.add(values, 0.5, out=values)
        gray = np.clip(values, 0, 255, out=values).astype(np.uint8)
        del values
        return np.repeat(gray[..., None], 3, axis=2)
    if mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, PA, LA, RGBA, CMYK, YCbCr, LAB, HSV
    return np.array(image, dtype=np.uint8)  # a writable copy (callers such as the CRF write into it)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1: upright). Decodes a PNG without EXIF before its pixels: see below."""
    try:
        return image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF: Pillow's exif_transpose ignores it too
        return 1


def _header_orientation(image: Image.Image) -> int | None:
    """The EXIF orientation, read without decoding pixels; None when only a decode can tell (Pillow loads a
    PNG whole to look for an eXIf chunk after its pixel data)."""
    if image.format == "PNG" and "exif" not in image.info:
        return None
    return _orientation(image)


def _oriented(size: tuple[int, int], orientation: int | None) -> tuple[int, int]:
    """(height, width) of a (width, height) Pillow size once the EXIF orientation is applied."""
    width, height = size
    return (width, height) if orientation in _SWAPS_AXES else (height, width)


def decode_bytes(image: Image.Image, full_size: tuple[int, int] | None = None) -> int:
    """Peak memory (bytes) ``read_image`` needs to decode the opened ``image`` at its current size (after any
    draft), from its header alone; ``full_size``: its (width, height) before the draft."""
    width, height = image.size
    per_pixel = _PEAK_BYTES_PER_PIXEL.get(image.mode, _UNKNOWN_MODE_BYTES)
    if _header_orientation(image) != 1:
        per_pixel += _TRANSPOSE_BYTES
    total = _FIXED_BYTES + width * height * per_pixel * _OWN_BUFFER_FORMATS.get(image.format or "", 1)
    if image.format == "JPEG" and image.info.get("progressive"):
        full_width, full_height = full_size or image.size
        total += full_width * full_height * _COEFFICIENT_BYTES * max(1, int(getattr(image, "layers", 3) or 3))
    return total


def _check_decodable(image: Image.Image, full_size: tuple[int, int]) -> None:
    """Refuse (``ImageReadError``) a decode over ``MAX_DECODE_BYTES``, before any pixel is decoded."""
    needed = decode_bytes(image, full_size)
    if needed > MAX_DECODE_BYTES:
        width, height = full_size
        reduced = " even at reduced size" if image.size != full_size else ""
        kind = f"{image.format or 'image'}{' (progressive)' if image.info.get('progressive') else ''}"
        raise ImageReadError(
            f"{width}x{height} {kind} would take {needed / 2**30:.1f} GiB to decode{reduced}, over the "
            f"{MAX_DECODE_BYTES / 2**30:g} GiB one image may take (aesipe.imaging.MAX_DECODE_BYTES): scale it down")


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """``path`` opened for an aesipe read: Pillow's pixel limit raised, warnings muted, and every failure
    inside the block turned into an ``ImageReadError`` with a short reason."""
    try:
        if path.stat().st_size == 0:
            raise ImageReadError("empty file")
        with warnings.catch_warnings(), _large_images_allowed():
            warnings.simplefilter("ignore")  # EXIF/ICC warnings; real failures raise
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageReadError(f"declares {width}x{height} pixels, more than {MAX_PIXELS}")
                yield image
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError("not an image Pillow can read") from None
    except Image.DecompressionBombError:
        raise ImageReadError(f"declares more than {MAX_PIXELS} pixels") from None
    except FileNotFoundError:
        raise ImageReadError("file not found") from None
    except IsADirectoryError:
        raise ImageReadError("a folder, not an image file") from None
    except PermissionError:
        raise ImageReadError("permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(f"truncated or corrupt ({str(exc).splitlines()[0][:120]})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image as ``read_image`` returns it (EXIF orientation applied). Header only,
    except a PNG without EXIF before its pixels (Pillow decodes it to look further): within the bound."""
    with _opened(Path(path)) as image:
        if _header_orientation(image) is None:
            _check_decodable(image, image.size)
        return _oriented(image.size, _orientation(image))


def fit_long_side(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """(height, width) scaled so that the long side is ``max_side`` (rounded, at least 1 pixel); ``size`` as it
    is when it already fits or ``max_side`` is None. The one rule for decoding and for writing previews."""
    height, width = size
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_image(path: Path, max_side: int | None) -> DecodedImage:
    """Decode ``path`` into upright uint8 RGB; see the module docstring."""
    with _opened(Path(path)) as image:
        full = image.size
        if max_side is not None and image.format == "JPEG":
            target = fit_long_side(_oriented(full, _header_orientation(image)), max_side)
            if max(target) < max(full):  # at least 2x the target: a high-quality resize follows
                image.draft("RGB", (max(target) * 2, max(target) * 2))
        _check_decodable(image, full)
        image.load()
        original = _oriented(full, _orientation(image))
        image = ImageOps.exif_transpose(image)
        rgb = _to_rgb_array(image)
    height, width = fit_long_side(original, max_side)
    if (height, width) != original:
        if rgb.shape[:2] != (height, width):
            rgb = np.array(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR,
                                                       reducing_gap=2.0))
    elif rgb.shape[:2] != original:
        raise ImageReadError(f"decoded size {rgb.shape[:2]} differs from the header's {original}")
    return DecodedImage(np.ascontiguousarray(rgb), original)


def read_rgb(path: Path) -> np.ndarray:
    """uint8 H x W x 3 RGB at full size (``read_image`` without a size cap); raises ``ImageReadError``."""
    return read_image(Path(path), None).rgb


def verify_image(path: Path) -> None:
    """Raise ``ImageReadError`` if ``read_rgb(path)`` (a training read) would, at a fraction of its cost.

    A JPEG is decoded in draft mode at 1/8 scale: every byte of its entropy-coded data is still read and
    decoded (truncation and corrupt data fail as in a full read), only the inverse DCT runs at 1/64 of the
    pixels and no RGB copy is made. Other formats have no cheaper decode: they are read as ``read_rgb`` does.
    Header-only checks would pass a truncated file."""
    path = Path(path)
    with _opened(path) as image:
        if image.format == "JPEG":
            full = image.size
            _check_decodable(image, full)  # the bound of the full-size read it stands for
            image.draft(image.mode, (1, 1))
            image.load()
            return
    read_rgb(path)
