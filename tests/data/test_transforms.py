"""Training transforms: crop/pad with a valid mask, padding values, image/label flip consistency."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aesipe.data import open_dataset
from aesipe.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassificationDataset,
    SegTrainDataset,
    color_jitter,
    normalize,
    random_crop,
)
from aesipe.config import DataConfig
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import save_label_png, voc_palette

RED, BLUE = (200, 30, 30), (30, 30, 200)


@pytest.fixture
def halves(tmp_path) -> Path:
    """Two 10x16 images: red left part (label 1, 6 columns) and blue right part (label 2)."""
    root = tmp_path / "halves"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "class_names.txt").write_text("background\nred\nblue\n")
    labels = np.zeros((10, 16), np.uint8)
    labels[:, :6], labels[:, 6:] = 1, 2
    image = np.where((labels == 1)[..., None], RED, BLUE).astype(np.uint8)
    for image_id in ("p", "q"):
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.png")
        save_label_png(root / "SegmentationClass" / f"{image_id}.png", labels, voc_palette())
        save_label_png(root / "pseudo" / f"{image_id}.png", labels, voc_palette())
    return root


def test_crop_of_a_larger_image_is_a_window_and_all_valid():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(20, 30, 3)).astype(np.float32)
    mask = rng.integers(0, 5, (20, 30)).astype(np.uint8)
    out, out_mask, valid = random_crop(image, mask, 8, rng)
    assert valid.min() == 1.0
    windows = [(y, x) for y in range(13) for x in range(23) if np.array_equal(image[y : y + 8, x : x + 8], out)]
    assert len(windows) == 1
    y, x = windows[0]
    np.testing.assert_array_equal(out_mask, mask[y : y + 8, x : x + 8])


def test_crop_of_a_smaller_image_pads_image_with_0_and_mask_with_255():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(5, 12, 3)).astype(np.float32) + 10  # no zeros inside the image
    mask = np.full((5, 12), 3, np.uint8)
    out, out_mask, valid = random_crop(image, mask, 8, rng)  # taller than the image, narrower
    assert out.shape == (8, 8, 3) and out_mask.shape == (8, 8) and valid.shape == (8, 8)
    assert valid.sum() == 5 * 8
    inside = valid == 1
    assert np.all(out[~inside] == 0) and np.all(out_mask[~inside] == 255)
    assert np.all(out[inside] != 0) and np.all(out_mask[inside] == 3)
    rows = np.flatnonzero(inside.any(1))
    assert np.array_equal(rows, np.arange(rows[0], rows[0] + 5))  # one contiguous block


def test_normalize_uses_imagenet_statistics():
    pixel = np.array([[[255, 0, 128]]], np.uint8)
    expected = (np.array([1.0, 0.0, 128 / 255]) - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(normalize(pixel)[0, 0], expected, rtol=1e-5)


def test_color_jitter():
    image = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(color_jitter(image, np.random.default_rng(0), 0.0), image)
    jittered = color_jitter(image, np.random.default_rng(0), 0.4)
    assert jittered.dtype == np.uint8 and not np.array_equal(jittered, image)


def _denormalize(tensor: torch.Tensor) -> np.ndarray:
    image = tensor.numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.round(image * 255).astype(int)


def test_seg_samples_flip_image_and_label_together(halves):
    ds = open_dataset(DataConfig(root=str(halves)), "train")
    seg = SegTrainDataset(ds, halves / "pseudo", crop_size=20, scale_range=(1.0, 1.0), flip=True, jitter=0.0, seed=0)
    seen_flipped = set()
    for epoch in range(6):
        seg.set_epoch(epoch)
        for index in range(len(seg)):
            sample = seg[index]
            label, valid, pixels = sample["label"].numpy(), sample["valid"].numpy() == 1, _denormalize(sample["image"])
            assert sample["label"].dtype == torch.int64 and valid.sum() == 10 * 16
            assert np.all(label[~valid] == 255) and np.all(pixels[~valid] == np.round(np.array(IMAGENET_MEAN) * 255))
            np.testing.assert_array_equal(pixels[label == 1], np.broadcast_to(RED, pixels[label == 1].shape))
            np.testing.assert_array_equal(pixels[label == 2], np.broadcast_to(BLUE, pixels[label == 2].shape))
            columns = np.flatnonzero(valid.any(0))
            seen_flipped.add(bool(label[valid.any(1)][0, columns[0]] == 2))  # blue on the left: flipped
    assert seen_flipped == {True, False}


def test_seg_dataset_checks_its_labels(halves):
    ds = open_dataset(DataConfig(root=str(halves)), "train")
    (halves / "pseudo" / "q.png").unlink()
    with pytest.raises(UserError, match=r"1 of 2 images have no label PNG in .*pseudo \(first: q\)"):
        SegTrainDataset(ds, halves / "pseudo", crop_size=8, scale_range=(1.0, 1.0), flip=True, jitter=0.0, seed=0)
    save_label_png(halves / "pseudo" / "q.png", np.zeros((3, 3), np.uint8), voc_palette())
    with pytest.raises(UserError, match=r"q\.png is 3x3 but its image is 16x10"):
        SegTrainDataset(ds, halves / "pseudo", crop_size=8, scale_range=(1.0, 1.0), flip=True, jitter=0.0, seed=0)[1]


def test_classification_samples(synth_root):
    ds = open_dataset(DataConfig(root=str(synth_root)), "train")
    train = ClassificationDataset(ds, crop_size=40, resize_long=(24, 36), flip=True, seed=5)
    sample = train[3]
    assert sample["image"].shape == (3, 40, 40) and sample["image"].dtype == torch.float32
    assert sample["valid"].shape == (40, 40) and sample["id"] == ds.ids[3]
    np.testing.assert_array_equal(sample["labels"].numpy(), ds.labels(ds.ids[3]))
    side = int(np.sqrt(sample["valid"].sum().item()))  # square images: the resized long side
    assert 24 <= side <= 36 and sample["valid"].sum() == side * side
    assert torch.equal(train[3]["image"], sample["image"])  # same seed, epoch and index
    train.set_epoch(1)
    assert not torch.equal(train[3]["image"], sample["image"])
    assert not torch.equal(ClassificationDataset(ds, crop_size=40, resize_long=(24, 36), flip=True, seed=6)[3]["image"], sample["image"])
    loader = torch.utils.data.DataLoader(train, batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 40, 40) and batch["labels"].shape == (4, 4)
