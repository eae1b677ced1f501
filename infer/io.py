"""Image files and their decoding for ``aesipe-label``: the one decoder of aesipe (``aesipe.imaging``) and
the input listing of ``inputs.py``."""
from __future__ import annotations

from pathlib import Path

from aesipe.imaging import DEFAULT_MAX_SIDE, DecodedImage, ImageReadError, read_image

from .inputs import resolve_inputs

__all__ = ["DEFAULT_MAX_SIDE", "DecodedImage", "ImageReadError", "list_images", "read_image"]


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive, sorted), relative to ``root``; a file gives its own name."""
    return [Path(str(image.rel)) for image in resolve_inputs(root)]
