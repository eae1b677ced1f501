"""Image-level labels derived from masks, cached in the user's cache folder.

Reading 10,582 SBD masks takes tens of seconds, so the result is kept as JSON in
``$AESIPE_CACHE_DIR/labels/`` (default ``$XDG_CACHE_HOME/aesipe`` or ``~/.cache/aesipe``), never
in the dataset folder (it may be read-only). A cache entry is trusted only if it was made from the
same root, split, mask folders (by modification time) and id list; otherwise it is rebuilt.
An unwritable cache folder just means no caching.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from aesipe.utils.atomic import atomic_write_text
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import IGNORE_INDEX, load_label_png

CACHE_VERSION = 1


def cache_dir() -> Path:
    if os.environ.get("AESIPE_CACHE_DIR"):
        return Path(os.environ["AESIPE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "aesipe"


def labels_cache_path(root: Path, split: str, mask_dirs: Sequence[Path]) -> Path:
    key = "\n".join([str(root.resolve()), split, *(str(d.resolve()) for d in mask_dirs)])
    return cache_dir() / "labels" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def labels_from_mask(mask: np.ndarray, num_classes: int, where: str) -> tuple[int, ...]:
    """Foreground indices (0-based, background excluded) of the classes present in a label mask."""
    values = np.unique(mask)
    values = values[(values != 0) & (values != IGNORE_INDEX)]
    if values.size and values.max() > num_classes:
        raise UserError(f"{where}: label value {int(values.max())} but the dataset has {num_classes} classes")
    return tuple(int(v) - 1 for v in values)


def _fingerprint(root: Path, split: str, mask_dirs: Sequence[Path], ids: Sequence[str], num_classes: int) -> dict:
    return {
        "version": CACHE_VERSION,
        "root": str(root.resolve()),
        "split": split,
        "mask_dirs": [str(d.resolve()) for d in mask_dirs],
        "mask_dir_mtimes": [d.stat().st_mtime_ns for d in mask_dirs],
        "num_classes": num_classes,
        "ids_hash": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
    }


def derive_labels(
    root: Path,
    split: str,
    ids: Sequence[str],
    mask_paths: Mapping[str, Path],
    mask_dirs: Sequence[Path],
    num_classes: int,
) -> dict[str, tuple[int, ...]]:
    """``{id: foreground indices}`` from the masks, read from / written to the cache."""
    missing = [i for i in ids if i not in mask_paths]
    if missing:
        raise UserError(
            f"image {missing[0]!r} has no labels: no labels CSV and no mask in "
            f"{', '.join(str(d) for d in mask_dirs) or 'a SegmentationClass folder'}"
            + (f" ({len(missing)} images like it)" if len(missing) > 1 else "")
        )
    fingerprint = _fingerprint(root, split, mask_dirs, ids, num_classes)
    path = labels_cache_path(root, split, mask_dirs)
    try:
        cached = json.loads(path.read_text())
        if cached.get("fingerprint") == fingerprint:
            return {i: tuple(cached["labels"][i]) for i in ids}
    except (OSError, ValueError, KeyError, TypeError):
        pass

    from tqdm import tqdm

    labels = {}
    for image_id in tqdm(ids, desc=f"labels from masks ({split})", unit="img", disable=len(ids) < 500, leave=False):
        mask_path = mask_paths[image_id]
        try:
            mask = load_label_png(mask_path)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read mask {mask_path}: {exc}") from None
        labels[image_id] = labels_from_mask(mask, num_classes, str(mask_path))
    try:
        atomic_write_text(path, json.dumps({"fingerprint": fingerprint, "labels": labels}))
    except OSError:
        pass  # a read-only home only costs the re-derivation next time
    return labels
