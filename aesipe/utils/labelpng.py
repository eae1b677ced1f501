"""Label maps as 8-bit palette PNGs (they look right in any viewer) and blended overlays.

numpy + Pillow only: shared by the training side (pseudo-labels) and the torch-free infer side.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_write_bytes

IGNORE_INDEX = 255


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


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_LIMIT = 1 << 20
"""Text chunks larger than this are not read (a mask's record is a few hundred bytes)."""


def read_png_text(path: str | Path) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) a PNG holds before its pixels, read chunk by chunk without decoding
    anything else (a re-run reads one per mask: a few kB read, not an image opened); {} for a file that is not
    a readable PNG."""
    text: dict[str, str] = {}
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != _PNG_SIGNATURE:
                return {}
            while True:
                header = handle.read(8)
                if len(header) < 8:
                    return text
                length, kind = struct.unpack(">I4s", header)
                if kind in (b"IDAT", b"IEND"):
                    return text
                if kind not in (b"tEXt", b"zTXt", b"iTXt") or length > _TEXT_LIMIT:
                    handle.seek(length + 4, os.SEEK_CUR)  # the chunk and its CRC
                    continue
                data = handle.read(length)
                handle.seek(4, os.SEEK_CUR)
                key, _, value = data.partition(b"\0")
                text[key.decode("latin-1")] = _chunk_text(kind, value)
    except (OSError, ValueError, struct.error, zlib.error, UnicodeDecodeError):
        return text


def _chunk_text(kind: bytes, value: bytes) -> str:
    if kind == b"tEXt":
        return value.decode("latin-1")
    if kind == b"zTXt":
        return zlib.decompress(value[1:]).decode("latin-1")
    compressed, rest = value[0], value[2:]  # iTXt: flag, method, language\0, translated keyword\0, text
    body = rest.split(b"\0", 2)[2]
    return (zlib.decompress(body) if compressed else body).decode("utf-8")


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
