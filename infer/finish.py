"""A ``Labeler``'s post-processing: one image's model outputs -> its labels (and the confidence and
probabilities it was prepared for) at its original size. Thread-safe: the engines run it in worker threads.

A segmenter's labels are the argmax of its test-time variants' summed logits (a CRF, a class restriction or a
confidence map on request); a pseudo-labeller's come from its maps by the rule of ``aesipe.pseudo_labels``,
the same code as the training run's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from aesipe import crf as crf_ops
from aesipe import pseudo_labels as rule

from . import postprocess
from .items import Labelled, Prepared, ZeroMaps

if TYPE_CHECKING:
    from .api import Labeler


def finish(labeler: Labeler, item: Prepared, outputs: list) -> Labelled:
    """Model outputs of one image -> its labels, with the confidence/probabilities it was prepared for."""
    if item.tiled:
        return outputs[0]
    zero_maps: tuple[int, ...] = ()
    if outputs and isinstance(outputs[-1], ZeroMaps):  # the graph's fallback output, after the score maps
        zero_maps = tuple(int(c) for c in np.flatnonzero(outputs[-1].flags))
        outputs = outputs[:-1]
    labelled = _finish(labeler, item, outputs)
    labelled.zero_maps = zero_maps
    return labelled


def _finish(labeler: Labeler, item: Prepared, outputs: list) -> Labelled:
    if outputs[0].ndim == 2:  # labels fetched directly: single pass at full size, nothing else asked
        return Labelled(np.ascontiguousarray(outputs[0], dtype=np.uint8))
    work_h, work_w = item.decoded.rgb.shape[:2]
    maps = []
    for (_, flipped, _), scores in zip(item.variants, outputs):
        scores = scores[..., ::-1] if flipped else scores
        maps.append(postprocess.resize_bilinear(scores, work_h, work_w))
    if labeler.info.needs_tags:
        return _finish_pseudo(labeler, item, maps)
    return _finish_segmenter(labeler, item, np.sum(np.stack(maps), axis=0, dtype=np.float32), len(maps))


def _finish_segmenter(labeler: Labeler, item: Prepared, logits: np.ndarray, passes: int) -> Labelled:
    height, width = item.decoded.original_size
    mean = logits / np.float32(passes)  # confidence: the softmax of the variants' mean logits
    probs = None
    if labeler.crf:  # unchanged unary: the softmax of the summed logits
        unary = postprocess.probabilities(logits, labeler.keep)
        work = crf_ops.crf_from_probabilities(item.decoded.rgb, unary, labeler.crf_config).astype(np.uint8)
        labels = postprocess.resize_labels_nearest(work, height, width)
        confidence = None
        if item.confidence:
            confidence = postprocess.chosen_probability(postprocess.probabilities(mean, labeler.keep), work,
                                                        height, width)
    elif item.confidence or labeler.keep is not None:
        labels, confidence = postprocess.decide_logits(postprocess.resized_channel(mean, height, width), len(mean),
                                                       labeler.keep, item.confidence)
    else:
        labels, confidence = postprocess.argmax_resized(logits, height, width), None
    if item.probabilities:
        probs = postprocess.probabilities(postprocess.resize_bilinear(mean, height, width), labeler.keep)
    return Labelled(labels, None if confidence is None else postprocess.to_u8(confidence), probs)


def _finish_pseudo(labeler: Labeler, item: Prepared, maps: list[np.ndarray]) -> Labelled:
    height, width = item.decoded.original_size
    classes, kept = rule.keep_image_classes(rule.fuse(maps), item.tags)
    scaled = rule.scale_background(kept, labeler.info.background_scale)
    confidence = probs = None
    if labeler.crf:
        work = crf_ops.label_crf(item.decoded.rgb, kept, classes, labeler.crf_config, labeler.info.background_scale)
        labels = postprocess.resize_labels_nearest(work.astype(np.uint8), height, width)
        if item.confidence:  # the share of the class the CRF chose (classes are sorted label values)
            index = np.searchsorted(classes, work)
            confidence = postprocess.chosen_probability(postprocess.ratios(scaled), index, height, width)
    elif item.confidence:
        labels, confidence = postprocess.decide_ratio(postprocess.resized_channel(scaled, height, width), classes,
                                                      True)
    else:
        labels = classes.astype(np.uint8)[postprocess.argmax_resized(scaled, height, width)]
    if item.probabilities:
        probs = np.zeros((labeler.info.num_classes + 1, height, width), dtype=np.float32)
        probs[classes] = postprocess.ratios(postprocess.resize_bilinear(scaled, height, width))
    return Labelled(labels, None if confidence is None else postprocess.to_u8(confidence), probs)
