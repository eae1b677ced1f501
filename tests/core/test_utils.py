"""Atomic writes and label PNGs (the infer side shares these)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aesipe.utils.atomic import atomic_open, atomic_write_text
from aesipe.utils.labelpng import load_label_png, overlay, save_label_png, voc_palette


def test_atomic_write_leaves_old_file_intact_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write(b"half-written")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left behind


def test_voc_palette_known_colours():
    palette = voc_palette()
    assert palette.shape == (256, 3)
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]
    assert palette[15].tolist() == [192, 128, 128]  # VOC 'person'
    assert palette[255].tolist() == [224, 224, 192]  # VOC void colour


def test_label_png_is_palette_mode_and_round_trips(tmp_path):
    labels = np.array([[0, 1, 2], [3, 255, 20]], dtype=np.uint8)
    path = tmp_path / "m.png"
    save_label_png(path, labels, voc_palette())
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[3:6] == [128, 0, 0]
    np.testing.assert_array_equal(load_label_png(path), labels)


def test_label_png_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="0..255"):
        save_label_png(tmp_path / "bad.png", np.array([[0, 300]]), voc_palette())
    with pytest.raises(ValueError, match="2-D"):
        save_label_png(tmp_path / "bad.png", np.zeros((2, 2, 3), np.uint8), voc_palette())


def test_overlay_blends_only_object_pixels():
    image = np.full((1, 3, 3), 100, dtype=np.uint8)
    labels = np.array([[0, 1, 255]], dtype=np.uint8)
    out = overlay(image, labels, voc_palette(), alpha=0.5)
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[0, 2].tolist() == [100, 100, 100]
    assert out[0, 1].tolist() == [114, 50, 50]  # (100 + 128) / 2, (100 + 0) / 2
