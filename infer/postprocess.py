"""Scores -> label maps: bilinear resize (torch's align_corners=False rule), fusing, argmax, dense CRF.

numpy only (pydensecrf for ``--crf``). Resizing to a large original size runs in bands of rows and
keeps only the running argmax, so memory stays O(classes x band x width).
"""
from __future__ import annotations

import numpy as np

BAND_ROWS = 256
CRF_INSTALL_HINT = "--crf needs pydensecrf: pip install 'aesipe[crf]'"
# METHOD.md dense CRF settings (same as the training side's CrfConfig defaults).
CRF_ITERATIONS, CRF_GT_PROB = 10, 0.7
CRF_GAUSSIAN_SXY, CRF_GAUSSIAN_COMPAT = 3, 3
CRF_BILATERAL_SXY, CRF_BILATERAL_SRGB, CRF_BILATERAL_COMPAT = 50, 5, 10


def _source_coords(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two source indices and the weight of the second (half-pixel centres)."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (src - low).astype(np.float32)


def resize_bilinear(scores: np.ndarray, height: int, width: int, rows: slice | None = None) -> np.ndarray:
    """[C, h, w] -> [C, height, width] (or the ``rows`` band of it), like F.interpolate(bilinear)."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape[1:] == (height, width) and rows is None:
        return scores
    y0, y1, wy = _source_coords(height, scores.shape[1])
    x0, x1, wx = _source_coords(width, scores.shape[2])
    if rows is not None:
        y0, y1, wy = y0[rows], y1[rows], wy[rows]
    vertical = scores[:, y0, :] * (1 - wy)[None, :, None] + scores[:, y1, :] * wy[None, :, None]
    return vertical[:, :, x0] * (1 - wx) + vertical[:, :, x1] * wx


def argmax_resized(scores: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [height, width] argmax of ``scores`` [C, h, w] resized bilinearly, in bands of rows."""
    if scores.shape[1:] == (height, width):
        return scores.argmax(axis=0).astype(np.uint8)
    labels = np.empty((height, width), dtype=np.uint8)
    for start in range(0, height, BAND_ROWS):
        band = slice(start, min(height, start + BAND_ROWS))
        labels[band] = resize_bilinear(scores, height, width, rows=band).argmax(axis=0)
    return labels


def resize_labels_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    if labels.shape == (height, width):
        return labels
    ys = np.minimum((np.arange(height) + 0.5) * labels.shape[0] / height, labels.shape[0] - 1).astype(np.int64)
    xs = np.minimum((np.arange(width) + 0.5) * labels.shape[1] / width, labels.shape[1] - 1).astype(np.int64)
    return labels[ys[:, None], xs[None, :]]


def fuse_scores(score_maps: list[np.ndarray], model_kind: str, background_scale: float) -> np.ndarray:
    """Sum test-time variants (all [C, h, w] at one size) into the scores whose argmax is the label.

    Segmenter: summed logits. Pseudo-labeller (METHOD.md): summed maps divided by their per-channel
    max (+1e-5), then the background channel multiplied by ``background_scale``.
    """
    total = np.sum(np.stack(score_maps), axis=0, dtype=np.float32)
    if model_kind == "pseudo_labeller":
        total /= total.max(axis=(1, 2), keepdims=True) + 1e-5
        total[0] *= background_scale
    return total


def crf_available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def dense_crf(image: np.ndarray, scores: np.ndarray | None, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Refine ``labels`` [H, W] on the RGB ``image``; unary from softmax(scores) when given, else from
    the labels with gt_prob 0.7 (the AE-SIPE "+CRF" protocol). Returns uint8 [H, W]."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels, unary_from_softmax

    height, width = labels.shape
    crf = dcrf.DenseCRF2D(width, height, num_classes)
    if scores is not None:
        shifted = np.exp(scores - scores.max(axis=0, keepdims=True))
        unary = unary_from_softmax(shifted / shifted.sum(axis=0, keepdims=True))
    else:
        unary = unary_from_labels(labels.astype(np.int64), num_classes, gt_prob=CRF_GT_PROB, zero_unsure=False)
    crf.setUnaryEnergy(np.array(unary, dtype=np.float32, order="C"))  # pydensecrf needs writable buffers
    crf.addPairwiseGaussian(sxy=CRF_GAUSSIAN_SXY, compat=CRF_GAUSSIAN_COMPAT)
    crf.addPairwiseBilateral(sxy=CRF_BILATERAL_SXY, srgb=CRF_BILATERAL_SRGB,
                             rgbim=np.array(image, dtype=np.uint8, order="C"), compat=CRF_BILATERAL_COMPAT)
    q = np.array(crf.inference(CRF_ITERATIONS)).reshape(num_classes, height, width)
    return q.argmax(axis=0).astype(np.uint8)
