"""The pseudo-label rule, in one place: class maps -> labels (numpy only, torch-free).

Maps are float arrays [..., K, H, W] with channel 0 = background. The rule (docs/method.md, "Making and
judging pseudo-labels"): the test-time variants' maps, each at the image's size, are summed; the sum is
divided by its per-channel spatial max (+1e-5); only the image's own classes and the background are kept;
the background channel is multiplied by the background scale; the label is the class of the strongest
channel. ``make-cam``, ``eval-cam``, the CRF and IR-label stages, the export parity check and
``aesipe.infer`` all call these functions; the exported pseudo-labeller's ``labels`` output mirrors them in
the graph (``export/wrappers.py``), and a test holds the two to the same labels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

MAX_NORM_EPS = 1e-5
"""Added to the per-channel max before dividing (the authors' code), so an all-zero channel stays zero."""


def max_normalise(maps: np.ndarray) -> np.ndarray:
    """float32 maps divided by their per-channel spatial max (+1e-5)."""
    maps = np.asarray(maps, dtype=np.float32)
    return maps / (maps.max(axis=(-2, -1), keepdims=True) + np.float32(MAX_NORM_EPS))


def fuse(variants: Sequence[np.ndarray]) -> np.ndarray:
    """Maps of the test-time variants (each [K, H, W] at the image's size) -> their max-normalised sum."""
    if not variants:
        raise ValueError("fuse needs the maps of at least one test-time variant")
    return max_normalise(np.sum(np.stack([np.asarray(v, np.float32) for v in variants]), axis=0))


def image_classes(tags: np.ndarray) -> np.ndarray:
    """int64 [K] label values kept for an image: background (0), then its tagged classes (multi-hot [C])."""
    return np.concatenate([[0], np.flatnonzero(np.asarray(tags) > 0) + 1]).astype(np.int64)


def keep_image_classes(maps: np.ndarray, tags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes [K], maps [K, H, W]): the channels of the background and the image's own classes."""
    classes = image_classes(tags)
    return classes, np.asarray(maps)[..., classes, :, :]


def scale_background(maps: np.ndarray, background_scale: float) -> np.ndarray:
    """A float32 copy with the background channel (0) multiplied by ``background_scale``."""
    scaled = np.array(maps, dtype=np.float32, copy=True)
    scaled[..., 0, :, :] *= np.float32(background_scale)
    return scaled


def scaled_argmax(maps: np.ndarray, background_scale: float) -> np.ndarray:
    """Index of the strongest channel after background x scale (ties go to the lower index)."""
    return np.argmax(scale_background(maps, background_scale), axis=-3)


def to_labels(maps: np.ndarray, classes: np.ndarray, background_scale: float) -> np.ndarray:
    """uint8 label values: ``classes[argmax]`` after background x scale."""
    return np.asarray(classes, np.uint8)[scaled_argmax(maps, background_scale)]


def labels_from_fused(fused: np.ndarray, tags: np.ndarray, background_scale: float) -> np.ndarray:
    """The whole rule after fusion: max-normalise, keep the image's classes, scale the background, argmax."""
    classes, kept = keep_image_classes(max_normalise(fused), tags)
    return to_labels(kept, classes, background_scale)
