"""Per-image output folders that remember what made them (``.aesipe-settings.json``).

A stage that writes one file per image (CAMs, pseudo-labels, IR labels, random-walk labels) calls
``prepare_output_dir`` with everything that changes its files: the stage settings, the identity of the
model files it reads and the settings of the folders it reads. A re-run with the same settings resumes
(finished files are kept); with other settings, or files of unknown origin, the folder's files are removed
first, so a folder never mixes outputs made two ways and a change upstream reaches every folder below it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from aesipe.utils.atomic import atomic_write_text

SETTINGS_FILE = ".aesipe-settings.json"
LEGACY_SETTINGS_FILE = ".aesipe-labels.json"  # aesipe 0.1's name (label folders only)


def file_identity(path: Path) -> dict[str, int]:
    """Cheap identity of a model file: a retrained checkpoint has another size or modification time."""
    stat = Path(path).stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def settings_digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def folder_digest(folder: Path) -> str | None:
    """The digest of the settings a prepared folder was made with (None if it has none)."""
    try:
        return json.loads((Path(folder) / SETTINGS_FILE).read_text())["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prepare_output_dir(out_dir: Path, settings: dict[str, Any], pattern: str) -> str:
    """Make ``out_dir`` hold only ``pattern`` files made with ``settings``; returns their digest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = settings_digest(settings)
    if folder_digest(out_dir) == digest:
        return digest
    for stale in out_dir.glob(pattern):
        stale.unlink()
    (out_dir / LEGACY_SETTINGS_FILE).unlink(missing_ok=True)
    record = {"digest": digest, "settings": settings}
    atomic_write_text(out_dir / SETTINGS_FILE, json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    return digest
