"""Segmentation metrics from a confusion matrix: IoU, precision, recall, pixel accuracy.

Conventions (also written into every JSON result, see ``CONVENTION``):
- classes are label values 0..C (0 = background); ground-truth pixels labelled 255 (void) are ignored;
- per class k: IoU = TP / (TP + FP + FN), precision = TP / (TP + FP), recall = TP / (TP + FN);
  a ratio with a zero denominator is undefined (NaN in numpy, ``null`` in JSON);
- mIoU is the mean IoU over the classes present in the ground truth or the prediction: a class
  absent from both has an undefined IoU and is left out of the mean (on the full VOC train set all
  21 classes are present, so this equals the usual 21-class mean); mean precision / recall likewise
  skip undefined values.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from aesipe.utils.labelpng import IGNORE_INDEX  # noqa: E402  (void label value)

CONVENTION = (
    "mIoU over background + C classes; ground-truth void (255) ignored; "
    "classes absent from both ground truth and prediction are excluded from the mean"
)


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_labels: int) -> np.ndarray:
    """int64 [N, N] counts, rows = ground truth, columns = prediction; N = background + C."""
    gt = np.asarray(gt).reshape(-1)
    pred = np.asarray(pred).reshape(-1)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has {gt.size} pixels but the prediction has {pred.size}")
    keep = gt != IGNORE_INDEX
    gt, pred = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
    if gt.size and (gt.min() < 0 or gt.max() >= num_labels):
        raise ValueError(f"ground-truth label {int(gt.max())} outside 0..{num_labels - 1} (and not void 255)")
    if pred.size and (pred.min() < 0 or pred.max() >= num_labels):
        raise ValueError(f"predicted label {int(pred.max())} outside 0..{num_labels - 1}")
    return np.bincount(gt * num_labels + pred, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


class ConfusionMatrix:
    """Accumulates pixels over images; ``summary()`` gives every metric of the module docstring."""

    def __init__(self, class_names: Sequence[str]):
        self.class_names = tuple(class_names)
        self.matrix = np.zeros((len(self.class_names), len(self.class_names)), np.int64)

    @property
    def num_labels(self) -> int:
        return len(self.class_names)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        self.matrix += confusion_matrix(gt, pred, self.num_labels)

    def add(self, matrix: np.ndarray) -> None:
        """Add a matrix computed elsewhere (e.g. in a worker process)."""
        self.matrix += np.asarray(matrix, np.int64)

    def iou(self) -> np.ndarray:
        tp = np.diag(self.matrix)
        return _ratio(tp, self.matrix.sum(0) + self.matrix.sum(1) - tp)

    def precision(self) -> np.ndarray:
        return _ratio(np.diag(self.matrix), self.matrix.sum(0))

    def recall(self) -> np.ndarray:
        return _ratio(np.diag(self.matrix), self.matrix.sum(1))

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else math.nan

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan

    def summary(self) -> dict:
        """JSON-ready dict: mIoU, pixel accuracy, per-class IoU/precision/recall, the matrix itself."""
        iou, precision, recall = self.iou(), self.precision(), self.recall()
        return {
            "convention": CONVENTION,
            "miou": _json_float(self.miou()),
            "pixel_accuracy": _json_float(self.pixel_accuracy()),
            "mean_precision": _json_float(_nanmean(precision)),
            "mean_recall": _json_float(_nanmean(recall)),
            "per_class": {
                name: {
                    "iou": _json_float(iou[k]),
                    "precision": _json_float(precision[k]),
                    "recall": _json_float(recall[k]),
                    "gt_pixels": int(self.matrix[k].sum()),
                }
                for k, name in enumerate(self.class_names)
            },
            "class_names": list(self.class_names),
            "confusion": self.matrix.tolist(),
        }


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def _json_float(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def _percent(value: float | None) -> str:
    return "    -" if value is None else f"{100 * value:5.1f}"


def format_table(summary: dict, title: str = "") -> str:
    """Plain-text table of a ``summary()`` dict: class, IoU, precision, recall (in %)."""
    names = summary["class_names"]
    width = max(12, *(len(n) for n in names))
    lines = [title] if title else []
    lines.append(f"{'class':<{width}}   IoU  prec   rec")
    for name in names:
        row = summary["per_class"][name]
        lines.append(f"{name:<{width}} {_percent(row['iou'])} {_percent(row['precision'])} {_percent(row['recall'])}")
    lines.append("-" * (width + 18))
    lines.append(
        f"{'mean':<{width}} {_percent(summary['miou'])} {_percent(summary['mean_precision'])} "
        f"{_percent(summary['mean_recall'])}"
    )
    lines.append(f"pixel accuracy {_percent(summary['pixel_accuracy']).strip()}%")
    return "\n".join(lines)
