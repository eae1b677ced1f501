"""Dense CRF refinement (Krähenbühl & Koltun) with the authors' settings, shared by training and labelling.

Two "+CRF" protocols (docs/method.md):

- ``label`` (the AE-SIPE "+CRF" column): argmax after background x scale, then one label-CRF;
- ``ir`` (SIPE's "+CRF", IRN's IR labels): fg_conf = CRF(argmax of the maps as they are), bg_conf =
  CRF(argmax with background x 0.8); a class where fg_conf is a class, 255 (unsure) where fg_conf is
  background but bg_conf is not, background where both are.

While the CRF runs, labels are *indices into the image's own classes* (0 = background), so an image with
2 classes runs a 3-label CRF; ``classes[...]`` maps them back to label values. A segmenter's probabilities
can be refined too (``crf_from_probabilities``). Needs ``pydensecrf`` (pip package ``pydensecrf2``, extra
``aesipe[crf]``), imported on first use; numpy otherwise.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .pseudo_labels import scaled_argmax
from .utils.errors import UserError
from .utils.labelpng import IGNORE_INDEX

if TYPE_CHECKING:
    from .config import CrfConfig

INSTALL_HINT = "pip install 'aesipe[crf]'"


def crf_available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def require_pydensecrf():
    """The ``pydensecrf.densecrf`` module, or a UserError that says how to install it."""
    try:
        import pydensecrf.densecrf as densecrf
    except ImportError:
        raise UserError(
            f"the dense CRF needs pydensecrf, which is not installed: {INSTALL_HINT} "
            "(builds the pydensecrf2 package, which imports as pydensecrf; needs a C++ compiler)"
        ) from None
    return densecrf


def _crf(image: np.ndarray, unary: np.ndarray, n_labels: int, cfg: "CrfConfig") -> np.ndarray:
    densecrf = require_pydensecrf()
    height, width = image.shape[:2]
    crf = densecrf.DenseCRF2D(width, height, n_labels)
    crf.setUnaryEnergy(np.array(unary, dtype=np.float32, order="C"))  # pydensecrf needs writable buffers
    crf.addPairwiseGaussian(sxy=cfg.gaussian_sxy, compat=cfg.gaussian_compat)
    rgb = np.array(image, dtype=np.uint8, order="C", copy=True)
    crf.addPairwiseBilateral(sxy=cfg.bilateral_sxy, srgb=cfg.bilateral_srgb, rgbim=rgb, compat=cfg.bilateral_compat)
    q = np.array(crf.inference(cfg.iterations))
    return np.argmax(q.reshape(n_labels, height, width), axis=0)


def crf_from_labels(image: np.ndarray, labels: np.ndarray, n_labels: int, cfg: "CrfConfig") -> np.ndarray:
    """Refine an int H x W map of labels 0..n_labels-1 on its uint8 H x W x 3 RGB image."""
    labels = np.asarray(labels)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must be H x W x 3 and H x W")
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(f"labels must lie in 0..{n_labels - 1}")
    if n_labels < 2:  # one label: nothing to decide (and the unary energy of the others is undefined)
        return np.zeros(labels.shape, np.int64)
    require_pydensecrf()
    from pydensecrf.utils import unary_from_labels

    unary = unary_from_labels(labels.astype(np.int64), n_labels, gt_prob=cfg.gt_prob, zero_unsure=False)
    return _crf(image, unary, n_labels, cfg)


def crf_from_probabilities(image: np.ndarray, probs: np.ndarray, cfg: "CrfConfig") -> np.ndarray:
    """Dense CRF with -log(probability) unaries [N, H, W]; returns the refined argmax [H, W]."""
    require_pydensecrf()
    from pydensecrf.utils import unary_from_softmax

    return _crf(image, unary_from_softmax(np.clip(probs, 1e-8, 1.0)), probs.shape[0], cfg)


def label_crf(image: np.ndarray, maps: np.ndarray, classes: np.ndarray, cfg: "CrfConfig", background_scale: float) -> np.ndarray:
    """Protocol ``label``: class values after background x scale, argmax and one label-CRF."""
    index = crf_from_labels(image, scaled_argmax(maps, background_scale), len(classes), cfg)
    return np.asarray(classes)[index]


def combine_ir_confidence(fg_conf: np.ndarray, bg_conf: np.ndarray) -> np.ndarray:
    """The IR-label rule on two label-value maps: fg_conf's class where it has one; 255 (unsure) where
    fg_conf says background but bg_conf does not; 0 where both say background."""
    fg_conf = np.asarray(fg_conf)
    bg_conf = np.asarray(bg_conf)
    if fg_conf.shape != bg_conf.shape:
        raise ValueError(f"fg_conf {fg_conf.shape} and bg_conf {bg_conf.shape} differ in shape")
    labels = fg_conf.astype(np.uint8, copy=True)
    labels[(fg_conf == 0) & (bg_conf != 0)] = IGNORE_INDEX
    return labels


def ir_labels(
    image: np.ndarray,
    maps: np.ndarray,
    classes: np.ndarray,
    cfg: "CrfConfig",
    fg_scale: float = 1.0,
    bg_scale: float = 0.8,
) -> np.ndarray:
    """Protocol ``ir``: uint8 label values with 255 = unsure (IRN's confident fg/bg regions)."""
    fg_conf = label_crf(image, maps, classes, cfg, fg_scale)
    bg_conf = label_crf(image, maps, classes, cfg, bg_scale)
    return combine_ir_confidence(fg_conf, bg_conf)
