"""Tiny datasets made in tmp folders: a fake VOC 2012 + SBD tree and a synthetic folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aesipe.data.synth import generate
from aesipe.utils.labelpng import save_label_png, voc_palette


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Label caches go to the test's own folder, never ~/.cache."""
    monkeypatch.setenv("AESIPE_CACHE_DIR", str(tmp_path / "cache"))


def write_image(path: Path, height: int, width: int, seed: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def write_mask(path: Path, values: list[int], height: int = 6, width: int = 8) -> np.ndarray:
    """A mask with one vertical band per value (so every value is present)."""
    mask = np.zeros((height, width), np.uint8)
    for k, value in enumerate(values):
        mask[:, k * width // len(values) : (k + 1) * width // len(values)] = value
    save_label_png(path, mask, voc_palette())
    return mask


# VOC label values: 1 aeroplane, 2 bicycle, 3 bird, 12 dog, 15 person, 20 tvmonitor.
FAKE_VOC_MASKS = {
    "2007_000001": [0, 1, 255],  # train (official + aug masks)
    "2007_000002": [15, 12],  # train
    "2008_000003": [0, 3],  # val
    "2008_000004": [20],  # val
    "2009_000005": [0, 2],  # SBD only
    "2010_000006": [0, 15, 255],  # SBD only
}
FAKE_VOC_TRAIN = ["2007_000001", "2007_000002"]
FAKE_VOC_VAL = ["2008_000003", "2008_000004"]


@pytest.fixture
def fake_voc(tmp_path) -> Path:
    """tmp/data/VOCdevkit/VOC2012 with 6 tiny images; returns tmp/data (the folder above VOCdevkit)."""
    voc = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    for seed, (image_id, values) in enumerate(FAKE_VOC_MASKS.items()):
        write_image(voc / "JPEGImages" / f"{image_id}.jpg", 6, 8, seed)
        write_mask(voc / "SegmentationClassAug" / f"{image_id}.png", values)
        if image_id in FAKE_VOC_TRAIN + FAKE_VOC_VAL:
            write_mask(voc / "SegmentationClass" / f"{image_id}.png", values)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(FAKE_VOC_TRAIN) + "\n")
    (sets / "val.txt").write_text("\n".join(FAKE_VOC_VAL) + "\n")
    return tmp_path / "data"


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """12 train + 4 val synthetic 64x64 images (read-only for the tests that share it)."""
    return generate(tmp_path_factory.mktemp("synth") / "data", 12, 4, size=64, seed=3, num_classes=4, progress=False)


# ---- a two-image dataset with hand-made CAM files, for eval-cam and the CRF commands ----------------
# Each image is 10x16 with three uniform colour bands: columns 0-3, 4-7 and 8-15.
BAND_COLOURS = ((30, 120, 40), (200, 40, 40), (40, 40, 200))
BAND_GT = {"u": (0, 1, 1), "v": (0, 1, 2)}  # label value of each band


def band_map(values) -> np.ndarray:
    """float32 10x16 map holding values[k] in band k."""
    row = np.array([values[0]] * 4 + [values[1]] * 4 + [values[2]] * 8, np.float32)
    return np.repeat(row[None], 10, axis=0)


def graded_u() -> tuple[list[int], np.ndarray]:
    """Image u: background 0.7 everywhere, class 1 at 0.5 / 0.65 / 0.9 in the three bands."""
    return [0, 1], np.stack([band_map((0.7, 0.7, 0.7)), band_map((0.5, 0.65, 0.9))])


def one_hot_v(swap: bool = False) -> tuple[list[int], np.ndarray]:
    """Image v: maps equal to the ground truth's one-hot (optionally with the two classes swapped)."""
    maps = [band_map((1, 0, 0)), band_map((0, 1, 0)), band_map((0, 0, 1))]
    if swap:
        maps[1], maps[2] = maps[2], maps[1]
    return [0, 1, 2], np.stack(maps)


def write_cam(run_dir: Path, split: str, image_id: str, classes, maps: np.ndarray) -> None:
    path = run_dir / "cams" / split / f"{image_id}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    maps = np.asarray(maps, np.float16)
    np.savez(path, classes=np.asarray(classes, np.int64), maps=maps, cam=maps[1:])


@pytest.fixture
def bands(tmp_path) -> Path:
    """Folder dataset 'bands' (classes cat, dog; train = u, v; labels derived from the masks)."""
    root = tmp_path / "bands"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "class_names.txt").write_text("background\ncat\ndog\n")
    for image_id, values in BAND_GT.items():
        image = np.stack([band_map(np.array(BAND_COLOURS)[:, c]) for c in range(3)], axis=-1).astype(np.uint8)
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.png")
        save_label_png(root / "SegmentationClass" / f"{image_id}.png", band_map(values).astype(np.uint8), voc_palette())
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("u\nv\n")
    return root


@pytest.fixture
def bands_run(tmp_path, bands) -> Path:
    """A run directory with CAM files for u (graded) and v (one-hot)."""
    run = tmp_path / "run"
    write_cam(run, "train", "u", *graded_u())
    write_cam(run, "train", "v", *one_hot_v())
    return run
