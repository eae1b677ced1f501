"""Training augmentations and the torch datasets of stage 1 / IRN (classification) and stage 3 (seg).

The recipe of the reference code: random resize (long side in [lo, hi] for stage 1 and IRN, a scale
factor for the segmenter), horizontal flip, optional colour jitter, ImageNet mean/std normalisation,
then a random crop to ``crop_size`` that pads small images (image 0 after normalisation, labels 255)
and says where the real image is (``valid``: 1 inside it, 0 in the padding) -- stage 1 multiplies its
CAMs by that mask so padding never becomes background evidence.

Randomness: every sample draws from its own generator seeded by ``(seed, epoch, index)``, so a run
is reproducible whatever the number of DataLoader workers and whichever worker gets the sample. Call
``set_epoch`` before each epoch (workers get a fresh copy of the dataset at every epoch unless
``persistent_workers`` is on).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from PIL import Image

from aesipe.constants import IMAGENET_MEAN, IMAGENET_STD
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import IGNORE_INDEX, load_label_png

from .dataset import SegmentationDataset


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def resize(image: np.ndarray, mask: np.ndarray | None, height: int, width: int):
    """Bilinear image, nearest-neighbour mask (class indices must never be blended)."""
    image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))
    return image, mask


def resize_long_side(image: np.ndarray, mask: np.ndarray | None, long_side: int):
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    return resize(image, mask, max(1, round(h * scale)), max(1, round(w * scale)))


def rescale(image: np.ndarray, mask: np.ndarray | None, scale: float):
    h, w = image.shape[:2]
    return resize(image, mask, max(1, round(h * scale)), max(1, round(w * scale)))


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor in [1 - s, 1 + s]; uint8 in and out."""
    pixels = image.astype(np.float32)
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, 3)
    pixels = pixels * brightness
    grey = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
    pixels = grey.mean() + (pixels - grey.mean()) * contrast
    grey = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
    pixels = grey[..., None] + (pixels - grey[..., None]) * saturation
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 RGB -> float32 H x W x 3 with ImageNet mean/std."""
    mean = np.array(IMAGENET_MEAN, np.float32) * 255
    std = np.array(IMAGENET_STD, np.float32) * 255
    return (image.astype(np.float32) - mean) / std


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 RGB -> normalised float32 [3, H, W] (what the networks take at test time)."""
    return torch.from_numpy(np.ascontiguousarray(normalize(image).transpose(2, 0, 1)))


def random_crop(image: np.ndarray, mask: np.ndarray | None, crop_size: int, rng: np.random.Generator):
    """Crop (and pad where the image is smaller) to crop_size x crop_size at a random place.

    Returns (image float32 S x S x 3 padded with 0, mask uint8 S x S padded with 255 or None,
    valid float32 S x S: 1 where the crop holds image pixels).
    """
    h, w = image.shape[:2]
    out_image = np.zeros((crop_size, crop_size, 3), np.float32)
    out_mask = np.full((crop_size, crop_size), IGNORE_INDEX, np.uint8) if mask is not None else None
    valid = np.zeros((crop_size, crop_size), np.float32)
    # Per axis: a larger image is cropped at a random offset, a smaller one placed at a random offset.
    src_y, dst_y = (int(rng.integers(h - crop_size + 1)), 0) if h > crop_size else (0, int(rng.integers(crop_size - h + 1)))
    src_x, dst_x = (int(rng.integers(w - crop_size + 1)), 0) if w > crop_size else (0, int(rng.integers(crop_size - w + 1)))
    ch, cw = min(h, crop_size), min(w, crop_size)
    out_image[dst_y : dst_y + ch, dst_x : dst_x + cw] = image[src_y : src_y + ch, src_x : src_x + cw]
    if mask is not None:
        out_mask[dst_y : dst_y + ch, dst_x : dst_x + cw] = mask[src_y : src_y + ch, src_x : src_x + cw]
    valid[dst_y : dst_y + ch, dst_x : dst_x + cw] = 1.0
    return out_image, out_mask, valid


class _AugmentedDataset(torch.utils.data.Dataset):
    """The recipes' numbers (crop, scales, jitter, seed) come from the run's config, which checks them: no
    defaults or checks of their own here."""

    def __init__(self, ds: SegmentationDataset, crop_size: int, flip: bool, jitter: float, seed: int):
        self.ds, self.crop_size, self.flip, self.jitter, self.seed = ds, crop_size, flip, jitter, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ds)

    def _finish(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator):
        """Flip, jitter, normalise, crop: shared tail of both recipes."""
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
            mask = mask[:, ::-1] if mask is not None else None
        if self.jitter > 0:
            image = color_jitter(np.ascontiguousarray(image), rng, self.jitter)
        image, mask, valid = random_crop(normalize(image), mask, self.crop_size, rng)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), mask, torch.from_numpy(valid)


class ClassificationDataset(_AugmentedDataset):
    """Stage 1 / IRN training samples: dict(image [3,S,S] float, labels [C] float, valid [S,S] float, id)."""

    def __init__(self, ds: SegmentationDataset, *, crop_size: int, resize_long: tuple[int, int], flip: bool, seed: int,
                 jitter: float = 0.0):
        super().__init__(ds, crop_size, flip, jitter, seed)
        self.resize_long = resize_long

    def __getitem__(self, index: int) -> dict:
        image_id = self.ds.ids[index]
        rng = sample_rng(self.seed, self.epoch, index)
        image, _ = resize_long_side(self.ds.load_image(image_id), None, int(rng.integers(self.resize_long[0], self.resize_long[1] + 1)))
        image, _, valid = self._finish(image, None, rng)
        return {"image": image, "labels": torch.from_numpy(self.ds.labels(image_id)), "valid": valid, "id": image_id}


class SegTrainDataset(_AugmentedDataset):
    """Stage 3 samples: dict(image [3,S,S] float, label [S,S] int64 with 255 = ignore, valid [S,S], id).

    Labels are palette PNGs ``label_dir/<id>.png`` (pseudo-labels), same size as the images. ``corrected``
    ({id: PNG}) gives reviewed masks that replace those images' pseudo-labels; each corrected image is drawn
    ``corrected_repeat`` times per epoch (its repeats get their own augmentation draws).
    """

    def __init__(self, ds: SegmentationDataset, label_dir: str | Path, *, crop_size: int, scale_range: tuple[float, float],
                 flip: bool, jitter: float, seed: int, corrected: Mapping[str, str | Path] | None = None,
                 corrected_repeat: int = 1):
        super().__init__(ds, crop_size, flip, jitter, seed)
        self.label_dir = Path(label_dir)
        if not self.label_dir.is_dir():
            raise UserError(f"label folder not found: {self.label_dir}")
        known = set(ds.ids)
        self.corrected = {i: Path(p) for i, p in (corrected or {}).items() if i in known}
        missing = [i for i in ds.ids if i not in self.corrected and not (self.label_dir / f"{i}.png").is_file()]
        if missing:
            raise UserError(
                f"{len(missing)} of {len(ds.ids)} images have no label PNG in {self.label_dir} (first: {missing[0]})"
            )
        self.scale_range = scale_range
        self.order = [i for i in ds.ids for _ in range(corrected_repeat if i in self.corrected else 1)]

    def __len__(self) -> int:
        return len(self.order)

    def label_path(self, image_id: str) -> Path:
        return self.corrected.get(image_id) or self.label_dir / f"{image_id}.png"

    def __getitem__(self, index: int) -> dict:
        image_id = self.order[index]
        rng = sample_rng(self.seed, self.epoch, index)
        image = self.ds.load_image(image_id)
        path = self.label_path(image_id)
        label = load_label_png(path)
        if label.shape != image.shape[:2]:
            raise UserError(
                f"label {path} is {label.shape[1]}x{label.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]} (WxH)"
            )
        image, label = rescale(image, label, float(rng.uniform(*self.scale_range)))
        image, label, valid = self._finish(image, label, rng)
        return {"image": image, "label": torch.from_numpy(label.astype(np.int64)), "valid": valid, "id": image_id}
