"""What ``aesipe-label`` labels: INPUT is a folder (searched recursively), one image, a glob pattern
(``"photos/**/*.jpg"``, quoted so the shell leaves it alone) or a list file (``@list.txt``: one path per
line, relative to the list's folder; blank lines and ``#`` comments skipped).

Each image gets a relative name (its path below the folder, the pattern's fixed prefix or the list's
folder) that names its outputs (``masks/<name>.png``) and its report entry. The folders aesipe-label
writes (OUTPUT/masks, OUTPUT/overlays, ...) are never inputs, so a re-run with OUTPUT inside INPUT does not
label its own masks.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aesipe.imaging import is_image_file
from aesipe.utils.errors import UserError

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputImage:
    rel: PurePosixPath
    """The image's name in the outputs and the report (its path relative to the input's root)."""
    path: Path
    """The file to read."""


def _is_under(path: Path, folders: list[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved == folder or folder in resolved.parents for folder in folders)


def _relative(path: Path, root: Path) -> PurePosixPath:
    """Where the image was found below the root, not where a symbolic link points: a folder of links into a
    dataset names its masks after the links (``photos/a.jpg -> /data/x/a.jpg`` gives ``a.png``)."""
    for found, base in ((os.path.abspath(path), os.path.abspath(root)), (path.resolve(), root.resolve())):
        try:
            return PurePosixPath(Path(found).relative_to(base).as_posix())
        except ValueError:
            continue
    return PurePosixPath(*path.resolve().parts[1:])  # outside the root (an absolute path in a list): no anchor


def _from_list(list_file: Path) -> tuple[Path, list[Path]]:
    if not list_file.is_file():
        raise UserError(f"list file not found: {list_file}" if not list_file.is_dir()
                        else f"@{list_file} is a folder: give a text file with one image path per line")
    try:
        lines = list_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read list file {list_file}: {exc}") from None
    root = list_file.parent
    paths = []
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            path = Path(entry).expanduser()
            paths.append(path if path.is_absolute() else root / path)
    return root, paths


def _glob_root(pattern: str) -> Path:
    """The pattern's longest leading part without wildcards (``photos/**/*.jpg`` -> ``photos``)."""
    parts = []
    for part in Path(pattern).parts:
        if _GLOB_CHARS & set(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def resolve_inputs(spec: str | Path, exclude: tuple[Path, ...] = ()) -> list[InputImage]:
    """The images ``spec`` names (see the module docstring), sorted by name, without those under the
    folders ``exclude``.

    A list file may name files that are missing or are not images: they are kept, and fail one by one with
    their reason; a folder or a pattern yields only image files."""
    text = str(spec)
    excluded = [Path(folder).resolve() for folder in exclude]
    if text.startswith("@"):
        root, paths = _from_list(Path(text[1:]).expanduser())
        from_list = True
    else:
        path = Path(text).expanduser()
        from_list = False
        if path.is_dir():
            if not os.access(path, os.R_OK | os.X_OK):
                raise UserError(f"cannot read folder {path}")
            root = path
            paths = [p for p in path.rglob("*") if p.is_file() and is_image_file(p)]
        elif path.is_file():
            root, paths = path.parent, [path]
            if not is_image_file(path):
                raise UserError(f"{path} is not an image file (.jpg, .png, ...); for a list of images use @{path}")
        elif _GLOB_CHARS & set(text):
            root = _glob_root(text)
            paths = [Path(p) for p in glob.glob(text, recursive=True)]
            paths = [p for p in paths if p.is_file() and is_image_file(p)]
        else:
            raise UserError(f"input not found: {path}")
    images: dict[PurePosixPath, InputImage] = {}
    for path in paths:
        if _is_under(path, excluded) or (not from_list and path.name.startswith(".")):
            continue
        rel = _relative(path, root)
        images.setdefault(rel, InputImage(rel, path))
    return [images[rel] for rel in sorted(images, key=lambda r: r.as_posix())]
