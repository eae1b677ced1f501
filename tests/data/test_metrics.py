"""Metrics against hand-computed confusion matrices."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aesipe.train.metrics import ConfusionMatrix, confusion_matrix, format_table

NAMES = ("background", "cat", "dog", "bird")
GT = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [2, 2, 0]])
# rows = ground truth, columns = prediction; the void pixel (gt 255) is ignored
EXPECTED = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])


def test_confusion_matrix_by_hand():
    np.testing.assert_array_equal(confusion_matrix(GT, PRED, 4), EXPECTED)


def test_metrics_by_hand_and_absent_classes_leave_the_mean():
    matrix = ConfusionMatrix(NAMES)
    matrix.update(GT, PRED)
    np.testing.assert_allclose(matrix.iou()[:3], [1 / 2, 1 / 3, 1 / 2])
    assert math.isnan(matrix.iou()[3])  # "bird" is in neither GT nor prediction
    assert matrix.miou() == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    np.testing.assert_allclose(matrix.precision()[:3], [1, 1 / 2, 1 / 2])
    np.testing.assert_allclose(matrix.recall()[:3], [1 / 2, 1 / 2, 1])
    assert matrix.pixel_accuracy() == pytest.approx(3 / 5)


def test_a_class_only_predicted_counts_with_iou_zero():
    matrix = ConfusionMatrix(NAMES)
    matrix.update(GT, PRED)
    matrix.update(np.array([0, 0]), np.array([3, 0]))  # a false "bird" on background
    assert matrix.iou()[3] == 0.0
    assert matrix.iou()[0] == pytest.approx(2 / 4)  # tp 2, fp 0, fn 2
    assert matrix.miou() == pytest.approx((2 / 4 + 1 / 3 + 1 / 2 + 0) / 4)
    assert math.isnan(matrix.recall()[3]) and matrix.precision()[3] == 0.0


def test_accumulation_equals_one_big_image():
    rng = np.random.default_rng(0)
    gts = [rng.choice([0, 1, 2, 3, 255], (7, 9)) for _ in range(4)]
    preds = [rng.integers(0, 4, (7, 9)) for _ in range(4)]
    matrix = ConfusionMatrix(NAMES)
    for gt, pred in zip(gts, preds):
        matrix.add(confusion_matrix(gt, pred, 4))
    np.testing.assert_array_equal(matrix.matrix, confusion_matrix(np.stack(gts), np.stack(preds), 4))
    assert matrix.matrix.sum() == sum(int((g != 255).sum()) for g in gts)


def test_summary_is_json_with_null_for_undefined_and_the_table_prints_it():
    matrix = ConfusionMatrix(NAMES)
    matrix.update(GT, PRED)
    summary = json.loads(json.dumps(matrix.summary(), allow_nan=False))
    assert summary["per_class"]["bird"] == {"iou": None, "precision": None, "recall": None, "gt_pixels": 0}
    assert summary["per_class"]["cat"]["iou"] == pytest.approx(1 / 3, abs=1e-6)
    assert summary["confusion"] == EXPECTED.tolist()
    assert "excluded from the mean" in summary["convention"]
    table = format_table(summary, "title")
    assert table.splitlines()[0] == "title"
    assert "cat           33.3  50.0  50.0" in table
    assert "bird             -     -     -" in table
    assert "mean          44.4" in table and "pixel accuracy 60.0%" in table


def test_out_of_range_labels_are_refused():
    with pytest.raises(ValueError, match="predicted label 4"):
        confusion_matrix(np.array([0, 1]), np.array([0, 4]), 4)
    with pytest.raises(ValueError, match="ground-truth label 7"):
        confusion_matrix(np.array([0, 7]), np.array([0, 1]), 4)
    with pytest.raises(ValueError, match="pixels"):
        confusion_matrix(np.zeros(3), np.zeros(4), 4)
