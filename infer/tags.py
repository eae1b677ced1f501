"""``--tags CSV`` for the pseudo-labeller: ``image,labels`` with class names separated by spaces.

The same format as training's tag files. ``image`` may be the file's path relative to INPUT (with or
without extension) or just its name/stem; an unknown class name is a usage error with a suggestion.
"""
from __future__ import annotations

import csv
import difflib
from pathlib import Path
from typing import Sequence

from aesipe.utils.errors import UserError


def read_tags(path: Path, foreground: Sequence[str]) -> dict[str, tuple[str, ...]]:
    if not path.is_file():
        raise UserError(f"tags CSV not found: {path}")
    known = set(foreground)
    tags: dict[str, tuple[str, ...]] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"image", "labels"} <= set(reader.fieldnames):
            raise UserError(f"{path}: expected a header 'image,labels'")
        for row_number, row in enumerate(reader, start=2):
            image = (row.get("image") or "").strip()
            names = tuple((row.get("labels") or "").split())
            for name in names:
                if name not in known:
                    close = difflib.get_close_matches(name, list(foreground), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise UserError(f"{path}:{row_number}: unknown class {name!r}{hint}")
            if image:
                tags[image] = names
    return tags


def tags_for(rel: Path, tags: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """Look ``rel`` up by relative path (with/without extension), then by file name, then by stem."""
    for key in (rel.as_posix(), rel.with_suffix("").as_posix(), rel.name, rel.stem):
        if key in tags:
            return tags[key]
    return None
