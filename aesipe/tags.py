"""Image-level tags in CSV files, ``image,labels`` with the class names separated by spaces: the one
reader, shared by the datasets (training tags) and ``aesipe-label --tags`` (the pseudo-labeller's input).

    image,labels
    2007_000032,aeroplane person
    photos/10_12_s.jpg,flower

Rows name images by id or by path (an image suffix is ignored: ``a.jpg`` and ``a`` are one image). An
empty labels field means the image shows background only. Every class name must be one of the model's or
dataset's foreground classes; a typo fails with the row number and the closest class name, because a
silently dropped tag would quietly poison training or labelling.
"""
from __future__ import annotations

import csv
import difflib
from pathlib import Path, PurePath
from typing import Iterable, Mapping, Sequence

from .imaging import strip_image_suffix
from .utils.errors import UserError

IMAGE_COLUMN = "image"
LABELS_COLUMN = "labels"


class TagTable(dict):
    """``{image id: sorted foreground indices}`` (0-based, background excluded), read from ``path``.

    Keys are the CSV's image names without their image suffix. ``lookup`` finds an image file's row."""

    def __init__(self, path: Path, rows: dict[str, tuple[int, ...]]):
        super().__init__(rows)
        self.path = path

    def lookup(self, rel: str | PurePath) -> tuple[int, ...] | None:
        """The row of the image at ``rel`` (relative path): by path, then file name; None if absent."""
        rel = PurePath(rel)
        for key in (rel.as_posix(), rel.name):
            found = self.get(strip_image_suffix(key))
            if found is not None:
                return found
        return None


def _closest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    if not close:
        lowered = {c.lower(): c for c in choices}
        if name.lower() in lowered:
            close = [lowered[name.lower()]]
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_tags_csv(path: str | Path, foreground_names: Sequence[str]) -> TagTable:
    """Parse a tag CSV into ``{image_id: sorted foreground indices (0-based, background excluded)}``.

    Raises ``UserError`` for a missing file or column, a folder, an unknown class name (with row number
    and a suggestion), an empty image name, or an image listed twice with different labels.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"labels CSV {path} is a folder: give the CSV file (image,labels)")
    if not path.is_file():
        raise UserError(f"labels CSV not found: {path}")
    index_of = {name: i for i, name in enumerate(foreground_names)}
    tags: dict[str, tuple[int, ...]] = {}
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise UserError(f"cannot read labels CSV {path}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if IMAGE_COLUMN not in header or LABELS_COLUMN not in header:
            raise UserError(
                f"{path}: expected a header 'image,labels', got {','.join(header) or 'an empty file'}"
            )
        # Row numbers count the header as row 1, as a spreadsheet shows them.
        for row_number, row in enumerate(reader, start=2):
            image = strip_image_suffix((row.get(IMAGE_COLUMN) or "").strip())
            if not image:
                raise UserError(f"{path} row {row_number}: empty image name")
            # An empty field is a background-only image (a valid negative example); an image that
            # is missing from the CSV altogether is an error, raised by the dataset.
            names = (row.get(LABELS_COLUMN) or "").split()
            indices = []
            for name in names:
                if name not in index_of:
                    raise UserError(
                        f"{path} row {row_number}: unknown class {name!r} for image {image!r}"
                        f"{_closest(name, foreground_names)}"
                    )
                indices.append(index_of[name])
            labels = tuple(sorted(set(indices)))
            if image in tags and tags[image] != labels:
                raise UserError(f"{path} row {row_number}: image {image!r} is listed twice with different labels")
            tags[image] = labels
    return TagTable(path, tags)


def format_tags_csv(tags: Mapping[str, Iterable[int]], foreground_names: Sequence[str]) -> str:
    """The CSV text for ``{image_id: foreground indices}`` (rows in the mapping's order)."""
    lines = [f"{IMAGE_COLUMN},{LABELS_COLUMN}"]
    for image, indices in tags.items():
        lines.append(f"{image},{' '.join(foreground_names[i] for i in sorted(indices))}")
    return "\n".join(lines) + "\n"
