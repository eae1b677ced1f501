"""Which files ``aesipe-label`` labels: image files under INPUT (recursive, sorted), decoded by the one
decoder of aesipe (``aesipe.imaging``)."""
from __future__ import annotations

from pathlib import Path

from aesipe.imaging import DEFAULT_MAX_SIDE, DecodedImage, ImageReadError, is_image_file, read_image

__all__ = ["DEFAULT_MAX_SIDE", "DecodedImage", "ImageReadError", "list_images", "read_image"]


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive, sorted), relative to ``root``; a file gives its own name."""
    if root.is_file():
        return [Path(root.name)] if is_image_file(root) else []
    found = [p.relative_to(root) for p in root.rglob("*") if p.is_file() and is_image_file(p)]
    return sorted(found, key=lambda p: p.as_posix())
