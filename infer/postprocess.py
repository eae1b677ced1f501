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


# -- labels with their confidence, one full-size channel at a time -----------------------------------------
# The winning class's probability is computed while the argmax runs (an online log-sum-exp), so a confidence
# map costs two more H x W float32 buffers, never a full-size [C, H, W] array.
def resized_channel(scores: np.ndarray, height: int, width: int):
    """``c -> scores[c]`` resized bilinearly to (height, width) (the channel itself when already that size)."""
    if scores.shape[1:] == (height, width):
        return lambda c: scores[c]
    return lambda c: cv2.resize(np.ascontiguousarray(scores[c], dtype=np.float32), (width, height),
                                interpolation=cv2.INTER_LINEAR)


def _groups(count: int, keep: tuple[int, ...] | None) -> tuple[list[int], list[int]]:
    """(channels whose probability counts for the background, the other classes' channels)."""
    if keep is None:
        return [0], list(range(1, count))
    return [0] + [c for c in range(1, count) if c not in keep], list(keep)


def decide_logits(channel, count: int, keep: tuple[int, ...] | None = None,
                  confidence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (uint8) and, with ``confidence``, the winning probability (float32) from logits.

    ``channel(c)`` gives channel c of the logits [count, H, W] at the output size. ``keep`` (label values)
    restricts the output to those classes: the probability of every other class counts for the
    background, so the label is the most probable of {background + the others, each kept class} and the
    confidence is that probability. Ties go to the lower index, as ``argmax`` does."""
    background, others = _groups(count, keep)
    best = None
    for c in background:  # the background group's logit: the log of its summed probability mass
        x = channel(c)
        best = np.array(x, dtype=np.float32, copy=True) if best is None else np.logaddexp(best, x, out=best)
    labels = np.zeros(best.shape, dtype=np.uint8)
    # Online softmax over the groups: ``best`` is the running max, ``total`` the sum of exp(logit - best),
    # so the winner's probability is 1 / total. Plain ufuncs only (masked writes are several times slower).
    total = np.ones(best.shape, dtype=np.float32) if confidence else None
    up, step, gap = np.empty(best.shape, bool), np.empty(best.shape, np.uint8), np.empty(best.shape, np.float32)
    for c in others:
        x = channel(c)
        np.greater(x, best, out=up)
        np.subtract(np.uint8(c), labels, out=step)  # labels += up * (c - labels), modulo 256: c where up
        np.multiply(step, up, out=step)
        labels += step
        if total is None:
            np.maximum(best, x, out=best)
            continue
        peak = np.maximum(best, x)
        np.exp(np.subtract(best, peak, out=gap), out=gap)
        total *= gap  # the old terms, relative to the new max
        np.exp(np.subtract(x, peak, out=gap), out=gap)
        total += gap
        best = peak
    if total is None:
        return labels, None
    return labels, np.reciprocal(total, out=total)


def probabilities(logits: np.ndarray, keep: tuple[int, ...] | None = None) -> np.ndarray:
    """Softmax of logits [C, H, W]; with ``keep``, the other classes' probability moved to the background."""
    probs = softmax(np.asarray(logits, dtype=np.float32))
    if keep is not None:
        background, _ = _groups(len(probs), keep)
        probs[0] = probs[background].sum(axis=0)
        probs[background[1:]] = 0.0
    return probs


def decide_ratio(channel, classes: np.ndarray, confidence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """A pseudo-labeller's labels from its kept maps (background already scaled): ``classes[argmax]`` and, with
    ``confidence``, the winning map's share of the kept maps' sum (1 / K where all K maps are zero)."""
    best = np.array(channel(0), dtype=np.float32, copy=True)
    index = np.zeros(best.shape, dtype=np.uint8)
    total = best.copy() if confidence else None
    for i in range(1, len(classes)):
        x = channel(i)
        index[x > best] = i
        np.maximum(best, x, out=best)
        if total is not None:
            total += x
    labels = np.asarray(classes, dtype=np.uint8)[index]
    if total is None:
        return labels, None
    share = np.full(best.shape, 1.0 / len(classes), dtype=np.float32)
    return labels, np.divide(best, total, out=share, where=total > 0)


def ratios(maps: np.ndarray) -> np.ndarray:
    """Each kept map's share of their sum [K, H, W] (the pseudo-labeller's probabilities; 1 / K where all are 0)."""
    maps = np.asarray(maps, dtype=np.float32)
    total = maps.sum(axis=0, keepdims=True)
    out = np.full(maps.shape, 1.0 / len(maps), dtype=np.float32)
    return np.divide(maps, total, out=out, where=total > 0)


def to_u8(confidence: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 0-255 (rounded): how confidence maps are kept and written."""
    scaled = np.multiply(confidence, np.float32(255), dtype=np.float32)
    np.rint(scaled, out=scaled)
    return np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)


def chosen_probability(probs: np.ndarray, index: np.ndarray, height: int, width: int) -> np.ndarray:
    """The probability of the chosen channel ``index`` [h, w] (a CRF's choice), resized to (height, width)."""
    chosen = np.take_along_axis(probs, index[None].astype(np.intp), axis=0)[0]
    return resize_bilinear(chosen[None], height, width)[0]
