"""The per-image files aesipe-label writes beside a mask, whichever engine runs the job (all atomic): the
confidence map (``confidence/<name>.png``, 8-bit grayscale, 255 x the probability of the written class), the
overlay with its legend (``overlays/<name>.jpg``) and CVAT's colour mask (``SegmentationClass/<name>.png``,
RGB in the model's palette). Paths come from ``layout.OutputLayout``; the write step is ``steps.MaskWriter``.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from aesipe.imaging import fit_long_side
from aesipe.utils.atomic import atomic_write_bytes
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import colorize, overlay

from .postprocess import resize_labels_nearest

COCO_HINT = "--format coco needs pycocotools (the standard COCO RLE code): pip install 'aesipe[coco]'"


def require_pycocotools():
    try:
        import pycocotools.mask as coco_mask
    except ImportError:
        raise UserError(COCO_HINT) from None
    return coco_mask


def check_cvat_palette(classes: Sequence[str], palette: np.ndarray) -> None:
    """CVAT reads a colour mask by its colours: two classes of one colour could not be told apart."""
    colours = [tuple(int(v) for v in palette[i]) for i in range(len(classes))]
    for i, colour in enumerate(colours):
        if colour in colours[:i]:
            raise UserError(f"--format cvat: classes {classes[colours.index(colour)]!r} and {classes[i]!r} share the "
                            f"colour {colour} in the model's palette, so CVAT could not tell them apart")


def padded_palette(palette: np.ndarray) -> np.ndarray:
    """uint8 [256, 3]: the model's palette, black beyond its end (every label value has a colour)."""
    full = np.zeros((256, 3), dtype=np.uint8)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    full[: len(palette)] = palette
    return full


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- per image ---------------------------------------------------------------------------------------------
def save_confidence_png(path: Path, values: np.ndarray) -> None:
    """uint8 H x W as an 8-bit grayscale PNG; zlib level 1: a third of level 6's time on a noisy map, 1.2x the bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(values, dtype=np.uint8), mode="L").save(buffer, format="PNG", compress_level=1)
    atomic_write_bytes(path, buffer.getvalue())


def load_confidence_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("L"), dtype=np.uint8)


def save_colour_png(path: Path, labels: np.ndarray, palette: np.ndarray) -> None:
    """RGB colour mask (CVAT's ``SegmentationClass``): each pixel the palette colour of its class."""
    atomic_write_bytes(path, _png(Image.fromarray(colorize(labels, palette), mode="RGB")))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def legend(width: int, present: Sequence[int], classes: Sequence[str], palette: np.ndarray) -> Image.Image:
    """A strip ``width`` wide with a colour swatch and the name of each present class (wrapped to rows)."""
    size = int(np.clip(width // 45, 11, 28))
    font, pad = _font(size), max(3, size // 3)
    entries = [(tuple(int(v) for v in palette[i]), classes[i] if i < len(classes) else str(i)) for i in present]
    if not entries:
        entries = [(None, "background only")]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    placed, x, y = [], pad, pad
    for colour, name in entries:
        w = size + pad + int(probe.textlength(name, font=font)) + 2 * pad
        if x > pad and x + w > width:
            x, y = pad, y + size + pad
        placed.append((x, y, colour, name))
        x += w
    strip = Image.new("RGB", (width, y + size + pad), (32, 32, 32))
    draw = ImageDraw.Draw(strip)
    for x, y, colour, name in placed:
        text_x = x
        if colour is not None:
            draw.rectangle([x, y, x + size - 1, y + size - 1], fill=colour, outline=(255, 255, 255))
            text_x = x + size + pad
        draw.text((text_x, y + size / 2), name, fill=(255, 255, 255), font=font, anchor="lm")
    return strip


def overlay_jpeg(rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, classes: Sequence[str],
                 max_side: int | None) -> bytes:
    """The blended preview (at the working resolution, at most ``max_side``) over a legend strip below it, so
    the legend never hides pixels."""
    height, width = fit_long_side(rgb.shape[:2], max_side)  # tiled images are full size: keep previews small
    if (height, width) != rgb.shape[:2]:
        rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0))
    small = resize_labels_nearest(labels, height, width)
    present = [int(i) for i in np.flatnonzero(np.bincount(small.ravel(), minlength=256)) if 0 < i < 255]
    strip = legend(width, present, classes, palette)
    canvas = Image.new("RGB", (width, height + strip.height))
    canvas.paste(Image.fromarray(overlay(rgb, small, palette)), (0, 0))
    canvas.paste(strip, (0, height))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
