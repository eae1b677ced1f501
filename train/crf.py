"""Dense CRF refinement of label maps (Krähenbühl & Koltun), the two "+CRF" protocols of METHOD.md.

- protocol ``label`` (the AE-SIPE "+CRF" column): argmax after background x scale, then one label-CRF;
- protocol ``ir`` (SIPE's "+CRF", IRN's IR labels): fg_conf = CRF(argmax of the maps as they are),
  bg_conf = CRF(argmax with background x 0.8); a class where fg_conf is a class, 255 (unsure) where
  fg_conf is background but bg_conf is not, background where both are; judged with unsure = background.

Label maps here are *indices into the image's own classes* (0 = background) while the CRF runs, so an
image with 2 classes runs a 3-label CRF; ``classes[...]`` maps them back to dataset label values.
Needs ``pydensecrf`` (pip package ``pydensecrf2``, extra ``aesipe[crf]``), imported on first use.
"""
from __future__ import annotations

import multiprocessing
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import IGNORE_INDEX

if TYPE_CHECKING:
    from .config import CrfConfig

INSTALL_HINT = "pip install 'aesipe[crf]'"


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


def crf_from_labels(image: np.ndarray, labels: np.ndarray, n_labels: int, cfg: "CrfConfig") -> np.ndarray:
    """Refine an int H x W map of labels 0..n_labels-1 on its uint8 H x W x 3 RGB image."""
    image = np.array(image, dtype=np.uint8, order="C", copy=True)  # pydensecrf needs a writable buffer
    labels = np.asarray(labels)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must be H x W x 3 and H x W")
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(f"labels must lie in 0..{n_labels - 1}")
    if n_labels < 2:  # one label: nothing to decide (and the unary energy of the others is undefined)
        return np.zeros(labels.shape, np.int64)
    densecrf = require_pydensecrf()
    from pydensecrf.utils import unary_from_labels

    h, w = labels.shape
    crf = densecrf.DenseCRF2D(w, h, n_labels)
    crf.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=cfg.gt_prob, zero_unsure=False))
    crf.addPairwiseGaussian(sxy=cfg.gaussian_sxy, compat=cfg.gaussian_compat)
    crf.addPairwiseBilateral(sxy=cfg.bilateral_sxy, srgb=cfg.bilateral_srgb, rgbim=image, compat=cfg.bilateral_compat)
    q = np.array(crf.inference(cfg.iterations))
    return np.argmax(q.reshape(n_labels, h, w), axis=0)


def scaled_argmax(maps: np.ndarray, background_scale: float) -> np.ndarray:
    """Index (into the map's channels) of the strongest channel after background (channel 0) x scale."""
    scaled = np.array(maps, dtype=np.float32, copy=True)
    scaled[0] *= background_scale
    return np.argmax(scaled, axis=0)


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


# ---- running per-image work in worker processes --------------------------------------------------

_WORKER_STATE: tuple[Callable, object] | None = None


def _init_worker(fn: Callable, context: object) -> None:
    global _WORKER_STATE
    _WORKER_STATE = (fn, context)


def _call_worker(item):
    fn, context = _WORKER_STATE
    return fn(context, item)


def parallel_map(
    fn: Callable[[object, object], object],
    items: Sequence,
    context: object,
    workers: int,
    desc: str,
    progress: bool = True,
) -> Iterator:
    """``fn(context, item)`` for every item, in order, in ``workers`` processes, with a progress bar.

    ``fn`` must be a module-level function; ``context`` (dataset, config...) is sent to each worker
    once, not with every item. ``workers <= 1`` runs in this process (easier to debug). Worker
    processes come from a fork server (or spawn), never a plain fork of a process that may hold
    torch threads.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress, leave=False)
    try:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                yield fn(context, item)
                bar.update()
            return
        methods = multiprocessing.get_all_start_methods()
        mp = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        chunk = max(1, min(8, len(items) // (4 * workers)))
        with mp.Pool(min(workers, len(items)), initializer=_init_worker, initargs=(fn, context)) as pool:
            for result in pool.imap(_call_worker, items, chunksize=chunk):
                yield result
                bar.update()
    finally:
        bar.close()
