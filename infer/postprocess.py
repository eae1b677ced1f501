"""Scores -> label maps at the image's size: bilinear resizing (OpenCV) and the argmax.

``cv2.resize`` with INTER_LINEAR uses the same half-pixel rule as torch's bilinear ``align_corners=False``
(tested). Resizing a score map to a large original size runs channel by channel and keeps only the
running best value and its index, so memory stays O(height x width), whatever the class count.
"""
from __future__ import annotations

import cv2
import numpy as np


def resize_bilinear(scores: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [C, h, w] -> [C, height, width], like F.interpolate(mode="bilinear", align_corners=False)."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape[1:] == (height, width):
        return scores
    return np.stack([cv2.resize(channel, (width, height), interpolation=cv2.INTER_LINEAR) for channel in scores])


def argmax_resized(scores: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [height, width] argmax of ``scores`` [C, h, w] resized bilinearly (ties: the lower index)."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape[1:] == (height, width):
        return scores.argmax(axis=0).astype(np.uint8)
    best = cv2.resize(scores[0], (width, height), interpolation=cv2.INTER_LINEAR)
    labels = np.zeros((height, width), dtype=np.uint8)
    for index in range(1, len(scores)):
        channel = cv2.resize(scores[index], (width, height), interpolation=cv2.INTER_LINEAR)
        better = channel > best
        labels[better] = index
        np.maximum(best, channel, out=best)
    return labels


def resize_labels_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a label map, pixel centres aligned (never blends class indices)."""
    if labels.shape == (height, width):
        return labels
    return cv2.resize(np.ascontiguousarray(labels), (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the class axis (0) of logits [C, H, W]."""
    shifted = np.exp(scores - scores.max(axis=0, keepdims=True))
    return shifted / shifted.sum(axis=0, keepdims=True)
