"""Synthetic data: deterministic bytes, exact masks, consistent tags, resumable writing, the CLI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aesipe.data import open_dataset
from aesipe.data.labelcache import labels_from_mask
from aesipe.data.synth import CLASSES, generate, render_scene
from aesipe.train.cli import app
from aesipe.config import DataConfig
from aesipe.utils.errors import UserError


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    first = tree_bytes(generate(tmp_path / "a", 5, 2, size=48, seed=7, progress=False))
    again = tree_bytes(generate(tmp_path / "b", 5, 2, size=48, seed=7, progress=False))
    other = tree_bytes(generate(tmp_path / "c", 5, 2, size=48, seed=8, progress=False))
    assert first == again
    images = [k for k in first if k.startswith("JPEGImages")]
    assert len(images) == 7
    assert all(first[k] != other[k] for k in images)


def test_resume_after_interruption_gives_the_same_bytes(tmp_path):
    complete = tree_bytes(generate(tmp_path / "a", 6, 2, size=48, seed=1, progress=False))
    partial = generate(tmp_path / "b", 6, 2, size=48, seed=1, progress=False)
    for name in ("JPEGImages/synth_00003.jpg", "SegmentationClass/synth_00005.png", "labels_train.csv"):
        (partial / name).unlink()
    assert tree_bytes(generate(partial, 6, 2, size=48, seed=1, progress=False)) == complete


def test_folder_is_resumed_only_with_the_same_settings(tmp_path):
    generate(tmp_path / "a", 3, 1, size=48, seed=1, progress=False)
    with pytest.raises(UserError, match=r"holds synthetic data made with other settings"):
        generate(tmp_path / "a", 3, 1, size=48, seed=2, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=r"exists and is not a synthetic dataset folder"):
        generate(tmp_path / "mine", 3, 1, size=48, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 9}, "1 to 8 classes"), ({"size": 16}, "at least 32 pixels"),
    ({"num_train": 0}, "at least one training image"), ({"image_format": "gif"}, "jpg or png"),
])  # fmt: skip
def test_bad_settings(tmp_path, kwargs, message):
    settings = {"num_train": 2, "num_val": 1, "size": 48, "progress": False} | kwargs
    with pytest.raises(UserError, match=message):
        generate(tmp_path / "x", **settings)


def test_tags_match_the_masks_and_objects_are_large(synth_root):
    for split, count in (("train", 12), ("val", 4)):
        ds = open_dataset(DataConfig(root=str(synth_root)), split)
        assert len(ds) == count and ds.class_names == ("background", "disc", "square", "triangle", "ring")
        for image_id in ds.ids:
            mask = ds.load_mask(image_id)
            present = labels_from_mask(mask, ds.num_classes, image_id)
            assert ds.label_indices(image_id) == present
            assert 1 <= len(present) <= 3
            assert set(np.unique(mask)) <= set(range(ds.num_classes + 1))
            for k in present:
                assert np.mean(mask == k + 1) > 0.05  # every tagged object is large enough to learn


def test_class_counts_and_sizes_follow_the_recipe():
    counts, areas = [], []
    for index in range(150):
        _, mask = render_scene(np.random.default_rng([11, index]), 64, 5)
        present = [v for v in np.unique(mask) if v]
        counts.append(len(present))
        areas += [np.mean(mask == v) for v in present]
    histogram = np.bincount(counts, minlength=4)[1:] / len(counts)
    assert histogram.min() > 0.1 and histogram[0] > histogram[2]  # 1, 2 and 3 classes all occur
    assert np.median(areas) > 0.1


def test_masks_are_exact_pixel_for_pixel(tmp_path):
    """Loss-free PNGs: every class's pixels carry that class's colour (the mask is the drawing)."""
    root = generate(tmp_path / "png", 8, 0, size=64, seed=5, num_classes=8, image_format="png", progress=False)
    ds = open_dataset(DataConfig(root=str(root)), "train")
    colours = np.array([c.colour for c in CLASSES], np.float32)
    for image_id in ds.ids:
        image, mask = ds.load_image(image_id).astype(np.float32), ds.load_mask(image_id)
        for value in np.unique(mask[mask > 0]):
            pixels = image[mask == value]
            # Textures shade the colour; the chromaticity (colour / brightness) stays the class's.
            chroma = pixels.mean(0) / pixels.mean()
            nearest = np.argmin(np.abs(colours / colours.mean(1, keepdims=True) - chroma).sum(1))
            assert nearest == value - 1, (image_id, value)


def test_cli_writes_the_splits(tmp_path):
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--images", "10", "--size", "40", "--classes", "3"])
    assert result.exit_code == 0, result.output
    assert "wrote 8 train + 2 val images" in result.output
    assert len((tmp_path / "s" / "ImageSets" / "Segmentation" / "val.txt").read_text().split()) == 2
    bad = CliRunner().invoke(app, ["synth", str(tmp_path / "t"), "--classes", "12"])
    assert bad.exit_code == 2 and "error: synthetic data has 1 to 8 classes" in bad.output
