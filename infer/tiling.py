"""Sliding-window labelling of large images (mmsegmentation's "slide" mode), in bounded memory.

Tiles of ``tile`` x ``tile`` pixels step by ``stride = tile - round(tile * overlap)``; the last tile of a
row or column is moved back to end at the border, so every tile has the full size (an image side smaller
than the tile gives one tile of that side). Each tile runs at full resolution (nothing is downscaled by
``max_side``); the logits of the tiles covering a pixel (and of the mirror image with ``flip``) are
averaged, then the argmax and the confidence are taken -- as mmsegmentation's ``slide_inference`` does.

Memory: tiles are run row by row, and the logits are accumulated only for the rows the current row of
tiles covers (a band of ``tile`` rows x the image width x the classes, float32). A band is turned into
labels and confidence (uint8 both) as soon as no later tile can touch it, so what grows with the image
is its uint8 RGB pixels and the outputs (1 or 2 bytes a pixel), never a full-size per-class float map.

Pseudo-labellers are not tiled: their maps are max-normalised over the whole image (and PAMR runs on it),
so tiles would change the rule.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import postprocess

if TYPE_CHECKING:
    from .api import Labeler
    from .items import Labelled, Prepared

def stride_of(tile: int, overlap: float) -> int:
    return max(1, tile - round(tile * overlap))


def windows(length: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) of the tiles along one side (mmsegmentation's grid: the last one ends at the border)."""
    if length <= tile:
        return [(0, length)]
    count = -(-(length - tile) // stride) + 1
    return [(min(i * stride, length - tile), min(i * stride, length - tile) + tile) for i in range(count)]


def coverage(spans: list[tuple[int, int]], length: int) -> np.ndarray:
    """How many tiles cover each position along one side (the 2-D count is the outer product)."""
    count = np.zeros(length, dtype=np.float32)
    for start, end in spans:
        count[start:end] += 1
    return count


def needs_tiles(tile: int | None, size: tuple[int, int]) -> bool:
    """An image no larger than one tile runs whole (the same result: one tile covering the image)."""
    return tile is not None and max(size) > tile


def label_tiled(labeler: "Labeler", item: "Prepared") -> "Labelled":
    """Labels (and confidence/probabilities if the item asks) of a segmenter, tile by tile."""
    from .items import Labelled

    rgb, settings = item.decoded.rgb, labeler.settings
    height, width = rgb.shape[:2]
    tile, passes = settings.tile, 2 if settings.flip else 1
    stride = stride_of(tile, settings.tile_overlap)
    rows, cols = windows(height, tile, stride), windows(width, tile, stride)
    cover_y, cover_x = coverage(rows, height) * passes, coverage(cols, width)
    classes = labeler.info.num_classes + 1
    labels = np.empty((height, width), dtype=np.uint8)
    confidence = np.empty((height, width), dtype=np.uint8) if item.confidence else None
    probs = np.empty((classes, height, width), dtype=np.float32) if item.probabilities else None
    band, lo = np.zeros((classes, min(tile, height), width), dtype=np.float32), 0
    """Summed logits of rows [lo, lo + band height): the rows one row of tiles covers."""

    def emit(upto: int) -> None:
        """Rows [lo, upto) are final (no later tile reaches them): turn their mean logits into outputs and
        move the band down to start at ``upto``."""
        nonlocal lo
        count = upto - lo
        if count <= 0:
            return
        inverse = np.float32(1) / (cover_y[lo:upto, None] * cover_x[None, :])
        labels[lo:upto], conf = postprocess.decide_logits(lambda c: band[c, :count] * inverse, classes, labeler.keep,
                                                          confidence is not None)
        if confidence is not None:
            confidence[lo:upto] = postprocess.to_u8(conf)
        if probs is not None:
            probs[:, lo:upto] = postprocess.probabilities(band[:, :count] * inverse, labeler.keep)
        rest = band.shape[1] - count
        band[:, :rest] = band[:, count:]
        band[:, rest:] = 0
        lo = upto

    for y1, y2 in rows:
        emit(y1)  # now lo == y1 and the band reaches y2 (rows are at most one tile tall)
        for first in range(0, len(cols), settings.batch_size):
            chunk = cols[first:first + settings.batch_size]
            inputs = []
            for x1, x2 in chunk:
                crop = rgb[y1:y2, x1:x2]
                inputs.append(labeler.to_input(crop))
                if settings.flip:
                    inputs.append(labeler.to_input(np.ascontiguousarray(crop[:, ::-1])))
            out = labeler.model.run(np.stack(inputs), None, ("scores",))["scores"]
            for j, (x1, x2) in enumerate(chunk):
                target = band[:, y1 - lo:y2 - lo, x1:x2]
                target += out[j * passes, :, : y2 - y1, : x2 - x1]
                if settings.flip:
                    target += out[j * passes + 1, :, : y2 - y1, : x2 - x1][..., ::-1]
    emit(height)
    return Labelled(labels, confidence, probs)
