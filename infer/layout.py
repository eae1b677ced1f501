"""Where every output of a labelling job goes: the one place for its naming and ownership rules.

Each input image gets one *name*, decided once for the whole job before any work (``assign_names``), and
every output of that image is derived from the name alone (``OutputLayout``): its mask, overlay,
confidence map, CVAT colour mask, contact-sheet thumbnails and its entries in CVAT's image list. So the map
from inputs to outputs is one-to-one by construction:
- a name is the image's path below the input root without its image suffix (``a/b.jpg`` -> ``a/b``), unless
  that could be confused with another image's name or path (``a.jpg``, ``a.png`` and ``a.jpg.png`` in one
  folder): then the suffix stays (``a.jpg``, ``a.png``, ``a.jpg.png``);
- names are compared case-insensitively (a case-insensitive filesystem, a ZIP or a labelling tool would
  merge ``A.jpg`` and ``a.jpg``), and names still alike get a short hash of their path;
- a name the outputs could not carry -- a control character (a newline would split CVAT's image list), a
  ``.``/``..`` part, a part too long for the filesystem once the longest output suffix is added -- has those
  parts replaced and a short hash of the path added;
- should two names still be equal (a hash collision), the job is refused before any work.

OUTPUT belongs to one run at a time (``OutputLock``: a second run on it is refused, naming the first), and
only aesipe's files in it are aesipe's: the folders it writes (``OUTPUT_FOLDERS``) are never read as input,
and the clean-up of a killed run removes only aesipe's temporary files, which carry a name no user file has
(``aesipe.utils.atomic``), without following symbolic links.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from aesipe.imaging import strip_image_suffix
from aesipe.utils.atomic import atomic_write_text, remove_temporaries
from aesipe.utils.errors import UserError

OUTPUT_FOLDERS = ("masks", "overlays", "confidence", "SegmentationClass", "ImageSets", "sheet")
"""What aesipe-label writes under OUTPUT (never read back as input)."""
REPORT_FILE = "report.json"
LOCK_FILE, LOCK_HOLDER = ".aesipe-lock", ".aesipe-lock.json"
COCO_FILE, REVIEW_FILE, LABELMAP_FILE, SHEET_FILE = "annotations.json", "review.csv", "labelmap.txt", "sheet.html"
CVAT_LIST = "ImageSets/Segmentation/default.txt"
NAME_MAX = 255
"""Bytes in one file name (Linux, macOS and Windows filesystems all allow at least this many)."""
LONGEST_SUFFIX = ".confidence.png"
"""The longest ending any output adds to a name (a sheet thumbnail of the confidence map)."""
_HASH = 8
_UNCARRIABLE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class ImageTask:
    """One input image of a job, with everything a worker needs to label it (picklable, small)."""

    rel: str
    """The image's name in the report: its path below the input root (posix)."""
    path: str
    """The file to read (absolute)."""
    name: str
    """Where its outputs go (``OutputLayout``): decided once by ``assign_names``."""
    tags: tuple[int, ...] | None = None
    """A pseudo-labeller's input: the image's tags as label indices without background (None: no row)."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH]


def _fold(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def _carriable(name: str) -> bool:
    budget = NAME_MAX - len(LONGEST_SUFFIX.encode())
    return all(part not in ("", ".", "..") and not _UNCARRIABLE.search(part)
               and len(part.encode("utf-8", "surrogateescape")) <= budget for part in name.split("/"))


def _make_carriable(name: str, rel: str) -> str:
    """``name`` with what the outputs cannot carry replaced, and a hash of ``rel`` so it stays unique."""
    budget = NAME_MAX - len(LONGEST_SUFFIX.encode()) - (_HASH + 1)
    parts = []
    for part in name.split("/"):
        part = _UNCARRIABLE.sub("_", part)
        part = "_" if part in ("", ".", "..") else part
        while len(part.encode("utf-8", "surrogateescape")) > budget:
            part = part[:-1]
        parts.append(part)
    return "/".join(parts) + "~" + _digest(rel)


def assign_names(rels: Iterable[str]) -> dict[str, str]:
    """One output name per image path (see the module docstring); one-to-one, or ``UserError``."""
    rels = list(rels)
    stems = {rel: strip_image_suffix(rel) for rel in rels}
    stem_count = Counter(_fold(stem) for stem in stems.values())
    taken_paths = {_fold(rel) for rel in rels}
    names = {}
    for rel, stem in stems.items():
        # A stem shared with another image, or equal to another image's whole path, would be ambiguous.
        plain = stem_count[_fold(stem)] == 1 and (_fold(stem) == _fold(rel) or _fold(stem) not in taken_paths)
        names[rel] = stem if plain else rel
    by_name = defaultdict(list)
    for rel, name in names.items():
        by_name[_fold(name)].append(rel)
    for rel, name in names.items():
        if len(by_name[_fold(name)]) > 1 or not _carriable(name):  # same but for case, or not carriable
            names[rel] = _make_carriable(name, rel)
    seen: dict[str, str] = {}
    for rel, name in names.items():
        other = seen.setdefault(_fold(name), rel)
        if other != rel:
            raise UserError(f"{other!r} and {rel!r} cannot be given outputs of their own (their names collide "
                            "even with a hash): rename one of them")
    return names


class OutputLayout:
    """The paths of a job's outputs under OUTPUT, from an image's name (see ``assign_names``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def mask_rel(self, name: str) -> str:
        return f"masks/{name}.png"

    def mask(self, name: str) -> Path:
        return self.root / self.mask_rel(name)

    def confidence_rel(self, name: str) -> str:
        return f"confidence/{name}.png"

    def confidence(self, name: str) -> Path:
        return self.root / self.confidence_rel(name)

    def overlay(self, name: str) -> Path:
        return self.root / "overlays" / f"{name}.jpg"

    def cvat(self, name: str) -> Path:
        return self.root / "SegmentationClass" / f"{name}.png"

    def sheet_stem(self, name: str) -> Path:
        """Thumbnails are this path plus ``.jpg``, ``.overlay.jpg`` and ``.confidence.png``."""
        return self.root / "sheet" / name

    def companions(self, name: str) -> tuple[Path, ...]:
        """The per-image files made with a mask: a rewritten mask takes them with it, so none outlives it."""
        return self.overlay(name), self.confidence(name), self.cvat(name)

    def file(self, relative: str) -> Path:
        """A whole-job file (``REPORT_FILE``, ``COCO_FILE``, ``CVAT_LIST``, ...)."""
        return self.root / relative

    def folders(self) -> tuple[Path, ...]:
        return tuple(self.root / name for name in OUTPUT_FOLDERS)

    def remove_temporaries(self) -> None:
        """The temporary files a killed run was writing (finished files are never half-written)."""
        for folder in self.folders():
            remove_temporaries(folder, recursive=True)
        remove_temporaries(self.root)


class OutputLock:
    """Holds OUTPUT for one run (``with OutputLock(root):``): a second run on the same OUTPUT is refused in
    one line that names the first (it would remove the first one's temporary files and write over its
    masks). An OS file lock (``filelock``): released by the OS if the holder dies, so a killed run never
    leaves OUTPUT locked."""

    def __init__(self, root: str | Path):
        from filelock import FileLock

        self.root = Path(root)
        self._lock = FileLock(str(self.root / LOCK_FILE))

    def __enter__(self) -> "OutputLock":
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise UserError(f"OUTPUT {self.root} is being written by another aesipe-label run ({self._holder()}): "
                            "wait for it to finish, or choose another OUTPUT") from None
        atomic_write_text(self.root / LOCK_HOLDER, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:300]}) + "\n")
        return self

    def __exit__(self, *exc) -> None:
        (self.root / LOCK_HOLDER).unlink(missing_ok=True)
        self._lock.release()

    def _holder(self) -> str:
        try:
            holder = json.loads((self.root / LOCK_HOLDER).read_text())
            return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "its details are not recorded"
