"""What made a mask, so a re-run never hands back a mask made by something else, or of another image.

Every mask ``aesipe-label`` writes carries, in a PNG text chunk, the record of what made it: the model file's
content hash, every setting that changes a mask (``LabelSettings.mask_record``), the image's tags for a
pseudo-labeller, and the image itself: its size, modification and change times, inode and the SHA-256 of its
bytes. A re-run keeps a mask only when that record equals what it would use now, and otherwise redoes it and
says why. The record travels inside the mask, so an interrupted run's finished masks are kept even when its
report.json was never written. Settings that change only speed or where it runs are not part of it.

Same image, cheaply: the file's status (size, mtime, ctime, inode) is compared first; only when it differs is
the file read and hashed (~0.6 GB/s here). Replacing an image by another of the same size and mtime (an
archive extracted with fixed timestamps) changes its ctime and inode, which no user can set, so it is hashed
and found out; a folder copied elsewhere (new ctimes, same bytes) is hashed once per image and kept.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from aesipe.utils.labelpng import read_png_text

TEXT_KEY = "aesipe:made-with"
_CHUNK = 1 << 20
_STATUS = ("size", "mtime_ns", "ctime_ns", "inode")


def file_digest(path: str | Path, length: int = 16) -> str:
    """SHA-256 of a file's bytes (the first ``length`` hex digits)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def image_identity(path: str | Path, content: str | None = None) -> dict[str, Any]:
    """The image as a mask's record holds it (``content``: its ``file_digest(path, 32)``, if already made)."""
    status = os.stat(path)
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "ctime_ns": status.st_ctime_ns,
            "inode": status.st_ino, "sha256": content or file_digest(path, 32)}


def made_with(model: str, options: dict[str, Any], tags: tuple[int, ...] | None,
              image: dict[str, Any] | None) -> dict[str, Any]:
    """The record of what makes a mask now (``image``: ``image_identity``; None while only comparing)."""
    return {"model": model, "options": options, "tags": None if tags is None else list(tags), "image": image}


def encode(record: dict[str, Any]) -> dict[str, str]:
    """The PNG text chunks that carry ``record``."""
    return {TEXT_KEY: json.dumps(record, sort_keys=True, separators=(",", ":"))}


def read(mask: Path) -> dict[str, Any] | None:
    """The record a mask was written with, or None (no record: aesipe 0.1's masks, or foreign files)."""
    text = read_png_text(mask).get(TEXT_KEY)
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def why_stale(old: dict[str, Any] | None, new: dict[str, Any], image: Path) -> str | None:
    """None if the mask ``old`` describes is still valid for ``new`` (``made_with`` without the image) and the
    image file at ``image``, else the reason it is not (for the console and the report)."""
    if old is None:
        return "made by an unknown run"
    if old.get("model") != new["model"]:
        return "another model"
    if old.get("options") != new["options"]:
        changed = sorted(k for k in set(old.get("options") or {}) | set(new["options"])
                         if (old.get("options") or {}).get(k) != new["options"].get(k))
        return "other " + "/".join(changed)
    if old.get("tags") != new["tags"]:
        return "other tags"
    return _image_changed(old.get("image"), image)


def _image_changed(recorded: Any, image: Path) -> str | None:
    if not isinstance(recorded, dict) or not isinstance(recorded.get("sha256"), str):
        return "made without a check of the image's content (an earlier aesipe)"
    status = os.stat(image)
    now = {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "ctime_ns": status.st_ctime_ns,
           "inode": status.st_ino}
    if all(recorded.get(key) == now[key] for key in _STATUS):
        return None
    if recorded.get("size") != now["size"] or file_digest(image, 32) != recorded["sha256"]:
        return "the image changed"
    return None  # the same bytes in a new file (a copied or restored folder)
