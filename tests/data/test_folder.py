"""VOC-style folders with class_names.txt: CSV tags, split fallbacks, user errors, real data."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aesipe.data import open_dataset, read_tags_csv, resolve_split
from aesipe.data.labelcache import labels_from_mask
from aesipe.config import DataConfig
from aesipe.utils.errors import UserError

from .conftest import write_image, write_mask

CLASSES = ["background", "cow", "horse", "sheep"]


@pytest.fixture
def folder(tmp_path) -> Path:
    """Images a, b, c (6x8), masks for a and b, split files, labels_train.csv for a and b."""
    root = tmp_path / "farm"
    root.mkdir()
    (root / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    for seed, image_id in enumerate("abc"):
        write_image(root / "JPEGImages" / f"{image_id}.png", 6, 8, seed)
    write_mask(root / "SegmentationClass" / "a.png", [0, 1])
    write_mask(root / "SegmentationClass" / "b.png", [2, 3, 255])
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("a\nb\n")
    (sets / "val.txt").write_text("c\n")
    (root / "labels_train.csv").write_text("image,labels\na,cow\nb.png,sheep horse\n")
    return root


def test_csv_tags_and_class_names(folder):
    ds = open_dataset(DataConfig(root=str(folder)), "train")
    assert ds.kind == "folder" and ds.class_names == tuple(CLASSES) and ds.num_classes == 3
    np.testing.assert_array_equal(ds.labels("a"), [1, 0, 0])
    np.testing.assert_array_equal(ds.labels("b"), [0, 1, 1])  # "b.png" row: the extension is dropped
    assert ds.has_masks and ds.load_mask("b").shape == (6, 8)


def test_split_without_masks_or_csv_row_needs_labels(folder):
    with pytest.raises(UserError, match=r"image 'c' has no labels: no labels CSV and no mask"):
        open_dataset(DataConfig(root=str(folder)), "val")
    (folder / "labels_val.csv").write_text("image,labels\nc,\n")  # empty field: background only
    ds = open_dataset(DataConfig(root=str(folder)), "val")
    np.testing.assert_array_equal(ds.labels("c"), [0, 0, 0])
    assert not ds.has_masks and ds.load_mask("c") is None


def test_image_missing_from_the_csv_is_an_error(folder):
    (folder / "labels_train.csv").write_text("image,labels\na,cow\n")
    with pytest.raises(UserError, match=r"image 'b' of split 'train' has no labels in .*labels_train\.csv"):
        open_dataset(DataConfig(root=str(folder)), "train")


def test_unknown_class_names_the_row_and_suggests_the_closest(folder):
    (folder / "labels_train.csv").write_text("image,labels\na,cow\nb,sheep hrose\n")
    with pytest.raises(UserError, match=r"labels_train\.csv row 3: unknown class 'hrose' for image 'b' \(did you mean 'horse'\?\)"):
        open_dataset(DataConfig(root=str(folder)), "train")


def test_csv_needs_its_header(folder):
    (folder / "labels_train.csv").write_text("a,cow\n")
    with pytest.raises(UserError, match=r"expected a header 'image,labels'"):
        open_dataset(DataConfig(root=str(folder)), "train")


def test_labels_csv_option_is_found_inside_the_dataset(folder, tmp_path, monkeypatch):
    (folder / "tags.csv").write_text("image,labels\na,sheep\nb,cow\nc,horse\n")
    elsewhere = tmp_path / "elsewhere"  # the folder the command runs from, with a tags.csv of its own
    elsewhere.mkdir()
    (elsewhere / "tags.csv").write_text("image,labels\nc,sheep\n")
    (elsewhere / "missing.csv").write_text("image,labels\nc,cow\n")
    monkeypatch.chdir(elsewhere)
    ds = open_dataset(DataConfig(root=str(folder), labels_csv="tags.csv"), "val")
    assert ds.label_indices("c") == (1,)  # the dataset's tags.csv (horse), not the current folder's (sheep)
    with pytest.raises(UserError, match=r"labels CSV not found: .*farm/missing\.csv"):
        open_dataset(DataConfig(root=str(folder), labels_csv="missing.csv"), "val")
    ds = open_dataset(DataConfig(root=str(folder), labels_csv=str(elsewhere / "tags.csv")), "val")
    assert ds.label_indices("c") == (2,)  # an absolute path is taken as it is


def test_split_fallbacks(folder):
    # With other split files present, an unknown split is an error ...
    with pytest.raises(UserError, match=r"missing split file .*holdout\.txt \(available: train, val\)"):
        open_dataset(DataConfig(root=str(folder)), "holdout")
    # ... a CSV for it names its images ...
    (folder / "labels_holdout.csv").write_text("image,labels\nc,cow\n")
    assert open_dataset(DataConfig(root=str(folder)), "holdout").ids == ["c"]
    # ... and a folder without any split file puts every image (with a mask) in every split.
    for path in (folder / "ImageSets" / "Segmentation").iterdir():
        path.unlink()
    (folder / "labels_train.csv").unlink()
    (folder / "JPEGImages" / "c.png").unlink()
    ds = open_dataset(DataConfig(root=str(folder)), "train")
    assert ds.ids == ["a", "b"] and ds.label_indices("b") == (1, 2)


def test_train_aug_falls_back_to_train_on_a_folder(folder):
    # The default data.train_split is VOC's train_aug; a folder without that split reads train.
    ds = open_dataset(DataConfig(root=str(folder)), "train_aug")
    assert ds.split == "train_aug" and ds.ids == ["a", "b"] and ds.label_indices("b") == (1, 2)
    assert resolve_split(DataConfig(root=str(folder)), "train_aug") == "train"
    # A folder that has its own train_aug list uses it.
    (folder / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("b\nc\n")
    (folder / "labels_train_aug.csv").write_text("image,labels\nb,horse\nc,cow\n")
    ds = open_dataset(DataConfig(root=str(folder)), "train_aug")
    assert ds.ids == ["b", "c"] and ds.label_indices("b") == (1,)
    assert resolve_split(DataConfig(root=str(folder)), "train_aug") == "train_aug"


def test_folder_kind_needs_class_names(folder):
    (folder / "class_names.txt").unlink()
    with pytest.raises(UserError, match=r"not a VOC-style folder: class_names\.txt is missing"):
        open_dataset(DataConfig(root=str(folder), kind="folder"), "train")


@pytest.mark.parametrize(
    "text, message",
    [("background\n", "needs the background name and at least one class"),
     ("background\ncow\ncow\n", "class 'cow' is listed twice"),
     ("background\nblack cow\n", "contains a space")],
)  # fmt: skip
def test_bad_class_names_file(folder, text, message):
    (folder / "class_names.txt").write_text(text)
    with pytest.raises(UserError, match=message):
        open_dataset(DataConfig(root=str(folder)), "train")


def test_missing_image_file(folder):
    (folder / "JPEGImages" / "b.png").unlink()
    with pytest.raises(UserError, match=r"missing image file for 'b'"):
        open_dataset(DataConfig(root=str(folder)), "train")


def test_exif_rotation_is_applied_and_masks_follow_the_rotated_image(folder):
    pixels = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(folder / "JPEGImages" / "a.jpg", exif=exif.tobytes(), quality=95)
    (folder / "JPEGImages" / "a.png").unlink()
    write_mask(folder / "SegmentationClass" / "a.png", [0, 1], height=8, width=6)
    ds = open_dataset(DataConfig(root=str(folder)), "train")
    assert ds.load_image("a").shape == (8, 6, 3)
    assert ds.load_mask("a").shape == (8, 6)


def test_read_tags_csv_directly(tmp_path):
    path = tmp_path / "tags.csv"
    path.write_text("image,labels\nx.jpg,horse cow horse\ny,\n")
    assert read_tags_csv(path, CLASSES[1:]) == {"x": (0, 1), "y": ()}


def test_data_core_imports_without_torch(synth_root):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from aesipe.data import open_dataset\n"
        "from aesipe.config import DataConfig\n"
        f"ds = open_dataset(DataConfig(root={str(synth_root)!r}), 'train')\n"
        "ds.load_image(ds.ids[0]); ds.load_mask(ds.ids[0]); print(len(ds))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "12"


@pytest.mark.shared_data
def test_msrc_loads(msrc_root):
    train = open_dataset(DataConfig(root=str(msrc_root)), "train")
    val = open_dataset(DataConfig(root=str(msrc_root)), "val")
    assert (len(train), len(val), train.num_classes) == (277, 58, 16)
    assert train.class_names[0] == "background" and train.has_masks and val.has_masks
    # The CSV tags agree with the masks (spot check, a few images).
    for image_id in train.ids[:: len(train) // 5]:
        assert train.label_indices(image_id) == labels_from_mask(train.load_mask(image_id), 16, image_id)
        assert train.load_image(image_id).shape[:2] == train.load_mask(image_id).shape
