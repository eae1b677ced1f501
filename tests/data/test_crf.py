"""Dense CRF: the IR-label rule by hand, label/IR protocols on a tiny image, the missing-package error."""
from __future__ import annotations

import importlib.util
import operator
import sys

import numpy as np
import pytest

from aesipe import crf as crf_ops
from aesipe.pseudo_labels import scaled_argmax
from aesipe.train.parallel import parallel_map
from aesipe.config import CrfConfig
from aesipe.utils.errors import UserError

from .conftest import BAND_COLOURS, band_map, graded_u

needs_crf = pytest.mark.skipif(
    importlib.util.find_spec("pydensecrf") is None, reason="pydensecrf (pip install 'aesipe[crf]') is not installed"
)


def band_image() -> np.ndarray:
    return np.stack([band_map(np.array(BAND_COLOURS)[:, c]) for c in range(3)], axis=-1).astype(np.uint8)


def test_ir_rule_by_hand():
    fg_conf = np.array([[0, 0, 3], [5, 0, 0]])
    bg_conf = np.array([[0, 3, 3], [5, 5, 0]])
    expected = np.array([[0, 255, 3], [5, 255, 0]], np.uint8)
    np.testing.assert_array_equal(crf_ops.combine_ir_confidence(fg_conf, bg_conf), expected)
    with pytest.raises(ValueError, match="differ in shape"):
        crf_ops.combine_ir_confidence(fg_conf, bg_conf[:1])


def test_scaled_argmax_scales_only_the_background():
    maps = np.array([[[0.9, 0.6]], [[0.8, 0.7]]], np.float32)  # 2 channels, 1x2 pixels
    np.testing.assert_array_equal(scaled_argmax(maps, 1.0), [[0, 1]])
    np.testing.assert_array_equal(scaled_argmax(maps, 0.8), [[1, 1]])
    assert maps[0, 0, 0] == np.float32(0.9)  # the input is not modified


def test_a_single_label_needs_no_crf():
    out = crf_ops.crf_from_labels(np.zeros((3, 4, 3), np.uint8), np.zeros((3, 4), int), 1, CrfConfig())
    np.testing.assert_array_equal(out, np.zeros((3, 4)))


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(UserError, match=r"pip install 'aesipe\[crf\]'"):
        crf_ops.require_pydensecrf()


@needs_crf
def test_crf_removes_label_noise_inside_uniform_regions():
    image = np.zeros((20, 20, 3), np.uint8)
    image[:, 10:] = 255
    clean = np.zeros((20, 20), int)
    clean[:, 10:] = 1
    noisy = clean.copy()
    noisy[5:7, 2:4], noisy[12:14, 14:16] = 1, 0
    np.testing.assert_array_equal(crf_ops.crf_from_labels(image, noisy, 2, CrfConfig()), clean)


@needs_crf
def test_label_and_ir_protocols_on_a_banded_image():
    classes, maps = graded_u()
    classes = np.array([0, 7])  # label values come back through `classes`
    image = band_image()
    row = lambda *bands: np.array([bands[0]] * 4 + [bands[1]] * 4 + [bands[2]] * 8)  # noqa: E731
    np.testing.assert_array_equal(crf_ops.label_crf(image, maps, classes, CrfConfig(), 1.0)[0], row(0, 0, 7))
    np.testing.assert_array_equal(crf_ops.label_crf(image, maps, classes, CrfConfig(), 0.8)[0], row(0, 7, 7))
    ir = crf_ops.ir_labels(image, maps, classes, CrfConfig(), fg_scale=1.0, bg_scale=0.8)
    assert ir.dtype == np.uint8
    np.testing.assert_array_equal(ir, np.repeat(row(0, 255, 7)[None], 10, axis=0))


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_map_keeps_order(workers):
    results = parallel_map(operator.mul, list(range(7)), 10, workers, "test", progress=False)
    assert list(results) == [10 * i for i in range(7)]
