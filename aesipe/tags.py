"""Image-level tags in CSV files, ``image,labels`` with the class names separated by spaces: the one
reader, shared by the datasets (training tags) and ``aesipe-label --tags`` (the pseudo-labeller's input).

    image,labels
    2007_000032,aeroplane person
    photos/10_12_s.jpg,flower

Rows name images by id or by path (an image suffix is ignored: ``a.jpg`` and ``a`` are one image). An
empty labels field means the image shows background only. Every class name must be one of the model's or
dataset's foreground classes; a typo fails with the row number and the closest class name, because a
silently dropped tag would quietly poison training or labelling. Tags written with another separator
(``disc;ring``, ``disc|ring``, an unquoted ``disc,ring`` that spills into a third field) fail saying so.

Encodings: UTF-8 with or without a byte-order mark, and UTF-16 with one (what spreadsheet programs save as
"Unicode text"). Anything else -- UTF-16 without a byte-order mark, Latin-1 or other legacy bytes, binary
files, NUL bytes -- is one ``UserError`` naming the file and where, never a decoding traceback.
"""
from __future__ import annotations

import codecs
import csv
import difflib
import io
import re
from pathlib import Path, PurePath
from typing import Iterable, Mapping, Sequence

from .imaging import strip_image_suffix
from .utils.errors import UserError

IMAGE_COLUMN = "image"
LABELS_COLUMN = "labels"
SEPARATOR_NAME = "spaces"
"""What separates the tags of one cell (``str.split()``: any run of whitespace)."""
_SEPARATOR_LOOKALIKES = ";,|/+&\\"
"""Characters people use between tags instead of a space."""
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


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


def _separator_hint(name: str, choices: Sequence[str]) -> str | None:
    """Why ``name`` looks like several tags joined by a character that is not the separator, or None."""
    wrong = [c for c in dict.fromkeys(name) if c in _SEPARATOR_LOOKALIKES and not any(c in n for n in choices)]
    if not wrong:
        return None
    pieces = re.split("|".join(re.escape(c) for c in wrong), name)
    shown = " and ".join(repr(c) for c in wrong)
    return (f"tags in a cell are separated by {SEPARATOR_NAME}, and {shown} {'is' if len(wrong) == 1 else 'are'} "
            f"not a separator (write {' '.join(p for p in pieces if p)!r})")


def read_tags_text(path: Path) -> str:
    """The text of a tags file: UTF-8 (with or without BOM) or UTF-16 with BOM; else one ``UserError``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read labels CSV {path}: {exc.strerror or exc}") from None
    utf16 = data.startswith(_UTF16_BOMS) and not data.startswith(codecs.BOM_UTF32_LE)
    if not utf16 and b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise UserError(f"labels CSV {path} holds NUL bytes (line {line}): a binary file, or UTF-16/UTF-32 without "
                        "a byte-order mark; save it as UTF-8")
    try:
        text = data.decode("utf-16") if utf16 else data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        if utf16:
            raise UserError(f"labels CSV {path} starts with a UTF-16 byte-order mark but is not valid UTF-16 "
                            f"(line {line}): save it again as UTF-8") from None
        raise UserError(f"labels CSV {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}): "
                        "save it as UTF-8, or UTF-16 with a byte-order mark") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise UserError(f"labels CSV {path} holds NUL characters (line {line}): not a text file; save it as UTF-8")
    return text


def read_tags_csv(path: str | Path, foreground_names: Sequence[str]) -> TagTable:
    """Parse a tag CSV into ``{image_id: sorted foreground indices (0-based, background excluded)}``.

    Raises ``UserError`` for a missing file or column, a folder, an encoding it does not read, malformed
    CSV, an unknown class name (with row number and a suggestion, or the separator to use), an empty image
    name, or an image listed twice with different labels.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"labels CSV {path} is a folder: give the CSV file (image,labels)")
    if not path.is_file():
        raise UserError(f"labels CSV not found: {path}")
    index_of = {name: i for i, name in enumerate(foreground_names)}
    tags: dict[str, tuple[int, ...]] = {}
    reader = csv.DictReader(io.StringIO(read_tags_text(path), newline=""))
    try:
        header = reader.fieldnames or []
        if IMAGE_COLUMN not in header or LABELS_COLUMN not in header:
            shown = ",".join(header)[:80]
            raise UserError(f"{path}: expected a header 'image,labels', got {repr(shown) if shown else 'an empty file'}")
        # Row numbers count the header as row 1, as a spreadsheet shows them.
        for row_number, row in enumerate(reader, start=2):
            tags.update(_parse_row(path, row_number, row, header, index_of, foreground_names, tags))
    except csv.Error as exc:
        raise UserError(f"{path} row {reader.line_num}: not valid CSV ({exc})") from None
    return TagTable(path, tags)


def _parse_row(path: Path, row_number: int, row: dict, header: Sequence[str], index_of: Mapping[str, int],
               foreground_names: Sequence[str], seen: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    image = strip_image_suffix((row.get(IMAGE_COLUMN) or "").strip())
    if not image:
        raise UserError(f"{path} row {row_number}: empty image name")
    spilled = [field for field in row.get(None) or () if field.strip()]  # fields past the header's
    if spilled:
        hint = ""
        if header[-1] == LABELS_COLUMN:
            joined = " ".join([*(row.get(LABELS_COLUMN) or "").split(), *spilled])
            hint = f": tags in a cell are separated by {SEPARATOR_NAME}, not commas (write {joined!r})"
        raise UserError(f"{path} row {row_number}: more fields than the header {','.join(header)!r}{hint}")
    # An empty field is a background-only image (a valid negative example); an image that is missing
    # from the CSV altogether is an error, raised by the dataset.
    indices = []
    for name in (row.get(LABELS_COLUMN) or "").split():
        if name not in index_of:
            hint = _separator_hint(name, foreground_names)
            raise UserError(f"{path} row {row_number}: unknown class {name!r} for image {image!r}"
                            + (f": {hint}" if hint else _closest(name, foreground_names)))
        indices.append(index_of[name])
    labels = tuple(sorted(set(indices)))
    if image in seen and seen[image] != labels:
        raise UserError(f"{path} row {row_number}: image {image!r} is listed twice with different labels")
    return {image: labels}


def format_tags_csv(tags: Mapping[str, Iterable[int]], foreground_names: Sequence[str]) -> str:
    """The CSV text for ``{image_id: foreground indices}`` (rows in the mapping's order)."""
    lines = [f"{IMAGE_COLUMN},{LABELS_COLUMN}"]
    for image, indices in tags.items():
        lines.append(f"{image},{' '.join(foreground_names[i] for i in sorted(indices))}")
    return "\n".join(lines) + "\n"
