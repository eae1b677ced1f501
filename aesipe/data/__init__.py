"""Datasets (PASCAL VOC 2012 + SBD, VOC-style folders with CSV tags), synthetic data, transforms.

The names here are numpy/Pillow only; the torch datasets and augmentations are in
``aesipe.data.transforms`` (imported on first use of their names).
"""
from __future__ import annotations

from .dataset import SegmentationDataset, image_size, open_dataset, resolve_split
from aesipe.tags import format_tags_csv, read_tags_csv
from .voc import VOC_CLASSES

__all__ = [
    "SegmentationDataset",
    "open_dataset",
    "resolve_split",
    "image_size",
    "read_tags_csv",
    "format_tags_csv",
    "VOC_CLASSES",
    "ClassificationDataset",
    "SegTrainDataset",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

_TORCH_NAMES = {"ClassificationDataset", "SegTrainDataset", "IMAGENET_MEAN", "IMAGENET_STD"}


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        from . import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'aesipe.data' has no attribute {name!r}")
