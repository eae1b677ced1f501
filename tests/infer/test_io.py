"""Awkward inputs: every readable image becomes upright uint8 RGB; broken files give a reason."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aesipe.imaging import ImageReadError, read_image
from aesipe.infer.inputs import resolve_inputs


def list_images(root):
    """The names aesipe-label gives the images INPUT names (their paths below the input's root)."""
    return [Path(str(image.rel)) for image in resolve_inputs(root)]

smooth_rgb = sys.modules["aesipe_tests_tiny_models"].smooth_rgb  # loaded by conftest.py


def _save(path, image, **kwargs):
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize("make,mode_hint", [
    (lambda rgb: Image.fromarray(rgb).convert("L"), "grayscale"),
    (lambda rgb: Image.fromarray(rgb).convert("RGBA"), "rgba"),
    (lambda rgb: Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE), "palette"),
    (lambda rgb: Image.fromarray(rgb).convert("LA"), "gray+alpha"),
    (lambda rgb: Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)), "16-bit"),
    (lambda rgb: Image.fromarray(rgb).convert("1"), "bilevel"),
])
def test_modes_become_rgb(tmp_path, make, mode_hint):
    rgb = smooth_rgb(13, 17)
    path = _save(tmp_path / f"{mode_hint}.png", make(rgb))
    decoded = read_image(path, None)
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (13, 17, 3) and decoded.original_size == (13, 17)


def test_sixteen_bit_values_are_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    decoded = read_image(_save(tmp_path / "deep.png", Image.fromarray(values)), None)
    assert decoded.rgb[0, :, 0].tolist() == [0, 100, 255]


def test_cmyk_jpeg(tmp_path):
    path = _save(tmp_path / "cmyk.jpg", Image.fromarray(smooth_rgb(20, 30)).convert("CMYK"))
    assert read_image(path, None).rgb.shape == (20, 30, 3)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.fromarray(smooth_rgb(20, 30))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(tmp_path / "rotated.jpg", image, exif=exif)
    decoded = read_image(path, None)
    assert decoded.original_size == (30, 20) and decoded.rgb.shape == (30, 20, 3)


@pytest.mark.parametrize("size", [(1, 1), (3, 5)])
def test_tiny_images(tmp_path, size):
    decoded = read_image(_save(tmp_path / "tiny.png", Image.fromarray(smooth_rgb(*size)[: size[0], : size[1]])), None)
    assert decoded.rgb.shape == (*size, 3)


def test_large_images_are_decoded_at_a_capped_size(tmp_path):
    path = _save(tmp_path / "large.jpg", Image.fromarray(smooth_rgb(300, 1000)))
    decoded = read_image(path, max_side=128)
    assert decoded.original_size == (300, 1000) and decoded.rgb.shape == (38, 128, 3)


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"this is text, not a picture", "not an image"),
])
def test_broken_files_have_a_reason(tmp_path, content, reason):
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason):
        read_image(path, None)


def test_truncated_jpeg(tmp_path):
    path = _save(tmp_path / "full.jpg", Image.fromarray(smooth_rgb(64, 64)))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        read_image(cut, None)


def test_listing_is_recursive_case_insensitive_and_ignores_other_files(photo_folder):
    names = [p.as_posix() for p in list_images(photo_folder)]
    assert names == ["a.jpg", "b.png", "sub/c.JPG", "sub/d.webp", "sub/deeper/e.bmp"]
    assert [p.as_posix() for p in list_images(photo_folder / "a.jpg")] == ["a.jpg"]


def test_images_are_named_where_they_are_found_not_where_links_point(tmp_path):
    """A folder of symbolic links into a dataset (a split made of links) names its masks after the links."""
    dataset = tmp_path / "dataset" / "JPEGImages"
    dataset.mkdir(parents=True)
    for name in ("x.jpg", "y.jpg"):
        _save(dataset / name, Image.fromarray(smooth_rgb(8, 8)))
    split = tmp_path / "val"
    (split / "sub").mkdir(parents=True)
    (split / "x.jpg").symlink_to(dataset / "x.jpg")
    (split / "sub" / "y.jpg").symlink_to(dataset / "y.jpg")
    assert [p.as_posix() for p in list_images(split)] == ["sub/y.jpg", "x.jpg"]
    linked_root = tmp_path / "linked_val"  # the root itself reached through a link
    linked_root.symlink_to(split)
    assert [p.as_posix() for p in list_images(linked_root)] == ["sub/y.jpg", "x.jpg"]
    listing = tmp_path / "val.txt"
    listing.write_text("val/x.jpg\nval/sub/y.jpg\n")
    from aesipe.infer.inputs import resolve_inputs

    assert [i.rel for i in resolve_inputs(f"@{listing}")] == ["val/sub/y.jpg", "val/x.jpg"]
