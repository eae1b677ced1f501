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
from pathlib import Path

from aesipe.imaging import is_image_file, is_image_name
from aesipe.utils.errors import UserError

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True, slots=True)
class InputImage:
    rel: str
    """The image's name in the outputs and the report: its posix path relative to the input's root."""
    path: str
    """The file to read, as found (a symbolic link is not resolved)."""


def _inside(real: str, folders: tuple[str, ...]) -> bool:
    """``real`` (a resolved path) is one of ``folders`` or below one."""
    return any(real == folder or real.startswith(folder.rstrip(os.sep) + os.sep) for folder in folders)


def _walk(root: str, excluded: tuple[str, ...]) -> list[InputImage]:
    """The image files below ``root``, named as found: symbolic links are followed (each real folder once, so a
    link loop ends) and named after the link, and the ``excluded`` folders (resolved) are skipped whole. One
    ``scandir`` per folder and one ``realpath`` per folder (or per linked file): linear in the folder."""
    found: list[InputImage] = []
    seen = {os.path.realpath(root)}
    if _inside(next(iter(seen)), excluded):
        return found
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # unreadable sub-folder: its images cannot be listed (as rglob skipped them)
            continue
        for entry in entries:
            try:
                if entry.is_dir():
                    real = os.path.realpath(entry.path)
                    if real not in seen and not _inside(real, excluded):
                        seen.add(real)
                        stack.append((entry.path, prefix + entry.name + "/"))
                elif not entry.name.startswith(".") and is_image_name(entry.name) and entry.is_file():
                    if entry.is_symlink() and _inside(os.path.realpath(entry.path), excluded):
                        continue
                    found.append(InputImage(prefix + entry.name, entry.path))
            except OSError:  # vanished while listing
                continue
    return found


def _relative(path: str, root: str) -> str:
    """Where the image was found below the root, not where a symbolic link points: a folder of links into a
    dataset names its masks after the links (``photos/a.jpg -> /data/x/a.jpg`` gives ``a.png``)."""
    for found, base in ((os.path.abspath(path), os.path.abspath(root)), (os.path.realpath(path), os.path.realpath(root))):
        if found.startswith(base.rstrip(os.sep) + os.sep):
            return Path(found[len(base.rstrip(os.sep)) + 1:]).as_posix()
    return Path(os.path.realpath(path)).as_posix().lstrip("/")  # outside the root (an absolute path in a list)


def _from_list(list_file: Path) -> tuple[Path, list[str]]:
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
            paths.append(str(path if path.is_absolute() else root / path))
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
    excluded = tuple(os.path.realpath(folder) for folder in exclude)
    if text.startswith("@"):
        root, paths = _from_list(Path(text[1:]).expanduser())
        hidden_too = True
    else:
        path = Path(text).expanduser()
        hidden_too = False
        if path.is_dir():
            if not os.access(path, os.R_OK | os.X_OK):
                raise UserError(f"cannot read folder {path}")
            return sorted(_walk(str(path), excluded), key=lambda image: image.rel)
        if path.is_file():
            root, paths = path.parent, [str(path)]
            if not is_image_file(path):
                raise UserError(f"{path} is not an image file (.jpg, .png, ...); for a list of images use @{path}")
        elif _GLOB_CHARS & set(text):
            root = _glob_root(text)
            paths = [p for p in glob.glob(text, recursive=True) if os.path.isfile(p) and is_image_file(Path(p))]
        else:
            raise UserError(f"input not found: {path}")
    images: dict[str, InputImage] = {}
    for found in paths:
        if _inside(os.path.realpath(found), excluded) or (not hidden_too and os.path.basename(found).startswith(".")):
            continue
        rel = _relative(found, str(root))
        images.setdefault(rel, InputImage(rel, found))
    return [images[rel] for rel in sorted(images)]
