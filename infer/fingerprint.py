"""What made a mask, so a re-run never hands back a mask made by something else.

Every mask ``aesipe-label`` writes carries, in a PNG text chunk, the record of what made it: the model
file's content hash, every option that changes a mask (test-time scales, flip, CRF, the size cap, tiling,
class restriction), the image's tags for a pseudo-labeller, and the input image's size and modification
time. A re-run keeps a mask only when that record equals what it would use now; otherwise it redoes the
mask and says why. The record travels inside the mask, so an interrupted run's finished masks are kept
even when its report.json was never written. Options that change only speed or where it runs (batch
size, workers, threads, device) are not part of it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from aesipe.utils.labelpng import read_png_text

TEXT_KEY = "aesipe:made-with"
_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits): a re-exported model is another model."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def made_with(model: str, options: dict[str, Any], tags: tuple[int, ...] | None, image: Path) -> dict[str, Any]:
    """The record of what makes this image's mask now."""
    stat = image.stat()
    return {"model": model, "options": options, "tags": None if tags is None else list(tags),
            "image": [stat.st_size, stat.st_mtime_ns]}


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


def why_stale(old: dict[str, Any] | None, new: dict[str, Any]) -> str | None:
    """None if the mask is still valid, else the reason it is not (for the console and the report)."""
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
    if old.get("image") != new["image"]:
        return "the image changed"
    return None
