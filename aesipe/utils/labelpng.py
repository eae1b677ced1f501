"""Label maps as 8-bit palette PNGs (they look right in any viewer) and blended overlays.

numpy + Pillow only: shared by the training side (pseudo-labels) and the torch-free infer side.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..constants import VOID_LABEL
from .atomic import atomic_write_bytes

IGNORE_INDEX = VOID_LABEL


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: class i gets the colour built from the bits of i; 255 -> white-ish."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (r, g, b)
    return palette


def _as_palette_image(labels: np.ndarray, palette: np.ndarray) -> Image.Image:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label map must be 2-D (H, W), got shape {labels.shape}")
    if labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError("label values must lie in 0..255 for an 8-bit PNG")
        labels = labels.astype(np.uint8)
    full = np.zeros((256, 3), dtype=np.uint8)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    full[: len(palette)] = palette
    labels = np.ascontiguousarray(labels)
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
    image.putpalette(full.flatten().tolist())
    return image


def encode_label_png(labels: np.ndarray, palette: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes; ``text`` entries become tEXt chunks (before the pixels, so they read without decoding)."""
    buffer = io.BytesIO()
    info = None
    if text:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    _as_palette_image(labels, palette).save(buffer, format="PNG", optimize=False, pnginfo=info)
    return buffer.getvalue()


def save_label_png(path: str | Path, labels: np.ndarray, palette: np.ndarray, text: dict[str, str] | None = None) -> None:
    """Write ``labels`` (uint8 H x W of class indices) as a palette PNG, atomically (``text``: tEXt chunks)."""
    atomic_write_bytes(path, encode_label_png(labels, palette, text))


def read_png_text(path: str | Path) -> dict[str, str]:
    """The tEXt chunks of a PNG, without decoding its pixels; {} for an unreadable file."""
    try:
        with Image.open(path) as image:
            return {str(k): str(v) for k, v in getattr(image, "text", {}).items()}
    except (OSError, ValueError, SyntaxError):
        return {}


def load_label_png(path: str | Path) -> np.ndarray:
    """Class indices of a palette (or grayscale) PNG as uint8 H x W; never the RGB colours."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path}: expected a palette or grayscale label PNG, got mode {image.mode}")
        return np.array(image, dtype=np.uint8)


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 colours of a label map."""
    full = np.zeros((256, 3), dtype=np.uint8)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    full[: len(palette)] = palette
    return full[np.asarray(labels, dtype=np.uint8)]


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend label colours over an RGB image (background 0 and void 255 stay unblended)."""
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    colours = colorize(labels, palette).astype(np.float32)
    blended = image.astype(np.float32)
    blend_here = (labels != 0) & (labels != IGNORE_INDEX)
    blended[blend_here] = (1 - alpha) * blended[blend_here] + alpha * colours[blend_here]
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
