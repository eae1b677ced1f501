"""PASCAL VOC 2012 + SBD: layout detection, splits (train_aug), labels from masks and their cache."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from aesipe.data import VOC_CLASSES, open_dataset, resolve_split
from aesipe.data.labelcache import cache_dir
from aesipe.config import DataConfig
from aesipe.utils.errors import UserError

from .conftest import FAKE_VOC_TRAIN, FAKE_VOC_VAL, write_mask


def voc_cfg(root, **kwargs) -> DataConfig:
    return DataConfig(root=str(root), **kwargs)


@pytest.mark.parametrize("below", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_root_may_be_any_of_the_three_usual_folders(fake_voc, below):
    ds = open_dataset(voc_cfg(fake_voc / below if below else fake_voc), "train")
    assert ds.kind == "voc"
    assert ds.root == fake_voc / "VOCdevkit" / "VOC2012"
    assert ds.ids == FAKE_VOC_TRAIN
    assert ds.class_names == VOC_CLASSES and ds.num_classes == 20
    assert ds.palette.shape == (256, 3) and ds.palette.dtype == np.uint8
    assert tuple(ds.palette[15]) == (192, 128, 128)  # VOC's person colour


def test_train_aug_is_sbd_masks_minus_val(fake_voc):
    ds = open_dataset(voc_cfg(fake_voc), "train_aug")
    assert ds.ids == ["2007_000001", "2007_000002", "2009_000005", "2010_000006"]
    assert not set(ds.ids) & set(FAKE_VOC_VAL)
    assert ds.has_masks
    assert resolve_split(voc_cfg(fake_voc), "train_aug") == "train_aug"  # VOC never falls back to train


@pytest.mark.parametrize("folder", ["Segmentation", "SegmentationAug"])
def test_train_aug_list_file_wins_over_derivation(fake_voc, folder):
    sets = fake_voc / "VOCdevkit" / "VOC2012" / "ImageSets" / folder
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train_aug.txt").write_text("2009_000005\n/JPEGImages/2007_000001.jpg /SegmentationClassAug/x.png\n")
    assert open_dataset(voc_cfg(fake_voc), "train_aug").ids == ["2009_000005", "2007_000001"]


def test_labels_come_from_masks_and_masks_prefer_the_official_ones(fake_voc):
    ds = open_dataset(voc_cfg(fake_voc), "train_aug")
    expected = np.zeros(20, np.float32)
    expected[[11, 14]] = 1  # dog (12) and person (15): label value - 1
    np.testing.assert_array_equal(ds.labels("2007_000002"), expected)
    assert ds.label_indices("2007_000001") == (0,)  # aeroplane; background and void are not labels
    assert ds.labels("2010_000006").dtype == np.float32
    assert ds.mask_path("2007_000001").parent.name == "SegmentationClass"
    assert ds.mask_path("2009_000005").parent.name == "SegmentationClassAug"
    assert set(np.unique(ds.load_mask("2010_000006"))) == {0, 15, 255}
    assert ds.load_image("2007_000001").shape == (6, 8, 3)


def test_derived_labels_are_cached_and_the_cache_is_checked(fake_voc):
    cfg = voc_cfg(fake_voc)
    open_dataset(cfg, "train")
    files = list((cache_dir() / "labels").glob("*.json"))
    assert len(files) == 1
    # Tamper with the cached labels: a second open must take them from the cache, not the masks.
    cached = json.loads(files[0].read_text())
    cached["labels"]["2007_000001"] = [19]
    files[0].write_text(json.dumps(cached))
    assert open_dataset(cfg, "train").label_indices("2007_000001") == (19,)
    # A changed id list invalidates the entry: labels are derived from the masks again.
    split = fake_voc / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text(split.read_text() + "2009_000005\n")
    assert open_dataset(cfg, "train").label_indices("2007_000001") == (0,)


def test_unwritable_cache_only_costs_time(fake_voc, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("AESIPE_CACHE_DIR", str(blocker))
    assert open_dataset(voc_cfg(fake_voc), "val").label_indices("2008_000004") == (19,)


def test_missing_root_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"dataset root not found: .*nowhere \(data\.root\)$"):
        open_dataset(voc_cfg(tmp_path / "nowhere"), "train")  # a root the user named: no synthetic-data offer
    with pytest.raises(UserError, match=r"is not a dataset: expected VOCdevkit/VOC2012"):
        open_dataset(voc_cfg(tmp_path), "train")


def test_missing_split_file_names_the_file_and_the_known_splits(fake_voc):
    with pytest.raises(UserError, match=r"missing split file .*Segmentation/test\.txt \(available: train, .*val"):
        open_dataset(voc_cfg(fake_voc), "test")


def test_train_aug_without_sbd_says_what_is_missing(fake_voc):
    shutil.rmtree(fake_voc / "VOCdevkit" / "VOC2012" / "SegmentationClassAug")
    with pytest.raises(UserError, match=r"'train_aug' needs SBD's SegmentationClassAug .*data.train_split=train"):
        open_dataset(voc_cfg(fake_voc), "train_aug")


def test_missing_image_file_is_reported_by_id(fake_voc):
    (fake_voc / "VOCdevkit" / "VOC2012" / "JPEGImages" / "2007_000002.jpg").unlink()
    with pytest.raises(UserError, match=r"missing image file for '2007_000002' .*split 'train'"):
        open_dataset(voc_cfg(fake_voc), "train")


def test_mask_of_another_size_is_reported_when_read(fake_voc):
    write_mask(fake_voc / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2008_000003.png", [0, 3], height=4, width=5)
    ds = open_dataset(voc_cfg(fake_voc), "val")
    with pytest.raises(UserError, match=r"2008_000003\.png is 5x4 but its image is 8x6 \(WxH\)"):
        ds.load_mask("2008_000003")


def test_mask_value_beyond_the_classes_is_reported(fake_voc):
    write_mask(fake_voc / "VOCdevkit" / "VOC2012" / "SegmentationClassAug" / "2007_000001.png", [0, 37])
    with pytest.raises(UserError, match=r"2007_000001\.png: label value 37 but the dataset has 20 classes"):
        open_dataset(voc_cfg(fake_voc), "train")
