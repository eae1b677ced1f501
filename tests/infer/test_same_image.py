"""A mask is kept only if its image is the same image (issue: trust by construction): whatever of the file's
status a replacement keeps (size, mtime, name), other pixels are found out; the same bytes in a new file (a
copied or restored folder) keep their masks."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aesipe.infer import fingerprint
from aesipe.infer.cli import app
from aesipe.utils.labelpng import load_label_png

runner = CliRunner()
smooth_rgb = __import__("sys").modules["aesipe_tests_tiny_models"].smooth_rgb  # loaded by conftest.py


def _label(*args):
    return runner.invoke(app, [str(a) for a in args])


def _bmp(path: Path, seed: int) -> None:
    """An uncompressed image: every picture of this size has the same byte size."""
    Image.fromarray(smooth_rgb(40, 56, seed=seed)).save(path, format="BMP")


def _replace_keeping(path: Path, seed: int, how: str) -> None:
    """Another picture under ``path`` with the old size and mtime, the way ``how`` would put it there."""
    status = path.stat()
    if how == "extract":  # an archive extracted over the folder: a new file, old timestamps
        path.unlink()
        _bmp(path, seed)
    elif how == "in-place":  # rewritten in place (same inode), then the mtime set back
        with open(path, "r+b") as handle:
            other = path.with_suffix(".other.bmp")
            _bmp(other, seed)
            handle.write(other.read_bytes())
            other.unlink()
    elif how == "rename-over":  # written beside it and renamed over it (what editors do)
        other = path.with_name(".new-" + path.name)
        _bmp(other, seed)
        os.replace(other, path)
    assert path.stat().st_size == status.st_size
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


@pytest.mark.parametrize("how", ["extract", "in-place", "rename-over"])
def test_another_picture_with_the_same_size_and_mtime_is_relabelled(seg_onnx, tmp_path, how):
    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    for i in range(3):
        _bmp(images / f"{i}.bmp", seed=i)
    assert _label(seg_onnx, images, out).exit_code == 0
    fresh = tmp_path / "fresh"
    _replace_keeping(images / "1.bmp", seed=7, how=how)
    result = _label(seg_onnx, images, out)
    assert result.exit_code == 0 and "2 masks still valid, 1 to label (redone: 1 the image changed)" in result.output
    assert _label(seg_onnx, images, fresh).exit_code == 0
    assert np.array_equal(load_label_png(out / "masks" / "1.png"), load_label_png(fresh / "masks" / "1.png"))


def test_a_copied_folder_keeps_its_masks(seg_onnx, tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    for i in range(3):
        _bmp(images / f"{i}.bmp", seed=i)
    assert _label(seg_onnx, images, out).exit_code == 0
    moved = tmp_path / "moved"
    shutil.copytree(images, moved)  # new files (ctime, inode), the same bytes
    result = _label(seg_onnx, moved, out)
    assert result.exit_code == 0 and "3 masks still valid, 0 to label" in result.output


def test_a_mask_records_the_images_content(seg_onnx, photo_folder, tmp_path):
    assert _label(seg_onnx, photo_folder, tmp_path / "out").exit_code == 0
    record = fingerprint.read(tmp_path / "out" / "masks" / "a.png")
    assert record["image"]["sha256"] == fingerprint.file_digest(photo_folder / "a.jpg", 32)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["images"]["a.jpg"]["fingerprint"] == fingerprint.digest(record)


def test_masks_recorded_without_the_content_are_redone_once(seg_onnx, photo_folder, tmp_path):
    """An earlier aesipe recorded only size and mtime, which a replacement can keep: such a mask is redone."""
    out = tmp_path / "out"
    assert _label(seg_onnx, photo_folder, out).exit_code == 0
    mask = out / "masks" / "a.png"
    record = fingerprint.read(mask)
    status = (photo_folder / "a.jpg").stat()
    record["image"] = [status.st_size, status.st_mtime_ns]
    from aesipe.utils.labelpng import save_label_png, voc_palette

    save_label_png(mask, load_label_png(mask), voc_palette(), fingerprint.encode(record))
    result = _label(seg_onnx, photo_folder, out)
    assert "1 made without a check of the image's content" in result.output
    assert "5 masks still valid" in _label(seg_onnx, photo_folder, out).output
