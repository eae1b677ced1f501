"""Tags files in every encoding people save them in: UTF-8 (with or without BOM) and UTF-16 with BOM are read;
anything else is one UserError line naming the file, never a UnicodeDecodeError. Tags joined by another
separator than spaces say so, instead of "unknown class".
"""
from __future__ import annotations

import codecs
import subprocess
import sys
from pathlib import Path

import pytest

from aesipe.tags import read_tags_csv
from aesipe.utils.errors import UserError

FOREGROUND = ["disc", "ring", "café", "日本"]
ROWS = "image,labels\na.jpg,disc ring\nb.png,café\nc,日本 disc\nd,\n"
EXPECTED = {"a": (0, 1), "b": (2,), "c": (0, 3), "d": ()}


def _write(tmp_path: Path, data: bytes, name: str = "tags.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("encoding, data", [
    ("utf-8", ROWS.encode("utf-8")),
    ("utf-8 with BOM", codecs.BOM_UTF8 + ROWS.encode("utf-8")),
    ("utf-8 with CRLF", ROWS.replace("\n", "\r\n").encode("utf-8")),
    ("utf-16-le with BOM", codecs.BOM_UTF16_LE + ROWS.encode("utf-16-le")),
    ("utf-16-be with BOM", codecs.BOM_UTF16_BE + ROWS.encode("utf-16-be")),
    ("utf-16 CRLF (Excel's 'Unicode text')", ROWS.replace("\n", "\r\n").encode("utf-16")),
])
def test_readable_encodings_give_the_same_tags(tmp_path, encoding, data):
    assert dict(read_tags_csv(_write(tmp_path, data), FOREGROUND)) == EXPECTED


@pytest.mark.parametrize("encoding, data, words", [
    ("utf-16-le without BOM", ROWS.encode("utf-16-le"), "NUL bytes"),
    ("utf-16-be without BOM", ROWS.encode("utf-16-be"), "NUL bytes"),
    ("utf-32 with BOM", ROWS.encode("utf-32"), "NUL bytes"),
    ("latin-1", ROWS.replace("日本", "disc").encode("latin-1"), "byte 0xe9 on line 3"),
    ("cp1252 quotes", b"image,labels\na,\x93disc\x94\n", "byte 0x93 on line 2"),
    ("binary", bytes(range(256)) * 4, "NUL bytes"),
    ("a PNG", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(20), "NUL bytes"),
    ("JPEG bytes", b"\xff\xd8\xff\xe0JFIF", "byte 0xff on line 1"),
    ("UTF-16 holding NUL", codecs.BOM_UTF16_LE + "image,labels\na,\x00\n".encode("utf-16-le"), "NUL characters"),
    ("NUL inside UTF-8", b"image,labels\na,disc\x00\n", "NUL bytes (line 2)"),
    ("odd UTF-16", codecs.BOM_UTF16_LE + ROWS.encode("utf-16-le") + b"\x00", "not valid UTF-16"),
])
def test_other_encodings_are_one_line_naming_the_file(tmp_path, encoding, data, words):
    path = _write(tmp_path, data)
    with pytest.raises(UserError) as caught:
        read_tags_csv(path, FOREGROUND)
    message = str(caught.value)
    assert str(path) in message and words in message and "\n" not in message, message


@pytest.mark.parametrize("cell, separator, suggestion", [
    ("disc;ring", "';'", "'disc ring'"),
    ("disc|ring", "'|'", "'disc ring'"),
    ("disc/ring", "'/'", "'disc ring'"),
    ('"disc,ring"', "','", "'disc ring'"),
    ("disc+ring;café", "'+' and ';' are", "'disc ring café'"),
])
def test_another_separator_is_named_as_such(tmp_path, cell, separator, suggestion):
    path = _write(tmp_path, f"image,labels\na,{cell}\n".encode())
    with pytest.raises(UserError) as caught:
        read_tags_csv(path, FOREGROUND)
    message = str(caught.value)
    assert "separated by spaces" in message and f"{separator}" in message and "not a separator" in message, message
    assert suggestion in message and "did you mean" not in message


def test_an_unquoted_comma_spilling_into_a_third_field_is_named(tmp_path):
    path = _write(tmp_path, b"image,labels\na,disc,ring\n")
    with pytest.raises(UserError, match=r"row 2: more fields than the header 'image,labels': tags in a cell are "
                                        r"separated by spaces, not commas \(write 'disc ring'\)"):
        read_tags_csv(path, FOREGROUND)


def test_whitespace_of_any_kind_separates_and_a_real_typo_still_gets_a_suggestion(tmp_path):
    path = _write(tmp_path, b"image,labels\na,disc\tring\nb,  ring   disc \n")
    assert dict(read_tags_csv(path, FOREGROUND)) == {"a": (0, 1), "b": (0, 1)}
    with pytest.raises(UserError, match=r"unknown class 'rign' for image 'a' \(did you mean 'ring'\?\)"):
        read_tags_csv(_write(tmp_path, b"image,labels\na,rign\n"), FOREGROUND)
    # A character that some class name contains is not taken for a separator.
    with pytest.raises(UserError, match=r"unknown class 'a/c'.*did you mean 'a/b'"):
        read_tags_csv(_write(tmp_path, b"image,labels\na,a/c\n"), ["a/b", "disc"])


def test_malformed_csv_is_one_line(tmp_path):
    path = _write(tmp_path, b'image,labels\na,"disc\n' + b"x" * 200_000 + b"\n")
    with pytest.raises(UserError, match=r"not valid CSV"):
        read_tags_csv(path, FOREGROUND)


def test_the_training_cli_says_it_in_one_line(tmp_path):
    """``aesipe-train`` reading a dataset whose tags CSV is UTF-16 without BOM: exit 2, one line."""
    from aesipe.data.synth import generate

    root = generate(tmp_path / "data", num_train=2, num_val=1, size=32, seed=0, num_classes=2, progress=False)
    csv_path = root / "labels_train.csv"
    csv_path.write_bytes(csv_path.read_text().encode("utf-16-le"))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "aesipe-train"), "train", str(tmp_path / "run"), f"data.root={root}",
         "data.train_split=train", "runtime.device=cpu", "model.no_pretrained=true"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert f"{csv_path} holds NUL bytes" in result.stderr
