"""What every importer shares: a candidate mask as a source holds it, and the files of a folder or a zip.

A reader turns its format into ``Candidate``s: the mask in the source's own codes (``labels``) with the class
name of each code (``names``; None where the codes are the run's label values, as in a plain folder of index
PNGs), the key that names its image in the source (a file name, a path, an image URL) and where it came from.
Problems (an unreadable file, a bad run-length code) are collected as one line each, never raised one by one,
so a user sees all of them at once and nothing is imported.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
from PIL import Image

MAX_MEMBER_BYTES = 256 << 20
"""Largest file read from a folder or zip export (a mask PNG or an annotations file)."""


@dataclass
class Candidate:
    key: str
    """What names the image in the source (a file's relative path, a COCO file_name, a task's image URL)."""
    item: str
    """Where in the source it was (recorded with the correction)."""
    labels: np.ndarray | None
    """H x W codes (any unsigned integer type); None: nothing painted, the whole image is background."""
    names: dict[int, str] | None
    """Class name of each code; None: the codes are the run's own label values (255 = void)."""
    time: str = ""
    """When the source says it was made (ISO text); the newest of two candidates for one image wins."""


class SourceFiles:
    """The files of a folder or a zip archive, by relative POSIX name; nothing is extracted or trusted as a path."""

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_file():
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise ValueError(f"{path} is not a zip archive: {exc}") from None
            self._names = {self._clean(i.filename): i for i in self._zip.infolist() if not i.is_dir()}
            self._names.pop(None, None)
        else:
            self._names = {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*")) if p.is_file()}

    @staticmethod
    def _clean(name: str) -> str | None:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if not parts or parts[0] == "/" or ".." in parts:
            return None  # absolute or escaping names are never read
        return "/".join(parts)

    def names(self) -> list[str]:
        return sorted(self._names)

    def find(self, name: str) -> str | None:
        """``name`` itself, or the one file that ends with ``/name`` (an export zipped inside a top folder)."""
        if name in self._names:
            return name
        found = [n for n in self._names if n.endswith("/" + name)]
        return min(found, key=len) if found else None

    def read(self, name: str) -> bytes:
        entry = self._names[name]
        size = entry.file_size if self._zip is not None else entry.stat().st_size
        if size > MAX_MEMBER_BYTES:
            raise ValueError(f"{name} is {size >> 20} MiB, more than a mask or annotations file can be "
                             f"({MAX_MEMBER_BYTES >> 20} MiB)")
        if self._zip is not None:
            with self._zip.open(entry) as handle:
                return handle.read(MAX_MEMBER_BYTES + 1)[:MAX_MEMBER_BYTES]
        return entry.read_bytes()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def open_png(data: bytes, name: str) -> Image.Image:
    """A PNG's header (pixels not decoded yet); ``ValueError`` with the reason when it is not one."""
    try:
        image = Image.open(io.BytesIO(data))
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(f"{name}: not a readable image ({exc})") from None
    if image.format != "PNG":
        raise ValueError(f"{name}: a {image.format} file, not a PNG (masks must be lossless)")
    return image


def pixels(image: Image.Image, name: str, mode: str | None = None) -> np.ndarray:
    try:
        return np.asarray(image.convert(mode) if mode else image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{name}: cannot decode ({exc})") from None


def iter_pngs(files: SourceFiles, under: str = "") -> Iterator[str]:
    prefix = under.rstrip("/") + "/" if under else ""
    for name in files.names():
        if name.startswith(prefix) and name.lower().endswith(".png") and not PurePosixPath(name).name.startswith("."):
            yield name
