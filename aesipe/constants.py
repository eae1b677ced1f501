"""Constants every side of aesipe shares (stdlib only): one definition each."""
from __future__ import annotations

from ._version import __version__

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""RGB mean of ImageNet in [0, 1]: every network here is normalised with it (and exported files carry it)."""
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""File suffixes read as images (lower case), by the datasets and by aesipe-label."""
PIXEL_SCALE = 1.0 / 255.0
"""uint8 pixels x this = the [0, 1] input of the networks and of exported graphs (float32 everywhere)."""

VOID_LABEL = 255
"""The label value that is no class: void in ground-truth masks, "unsure" in IR labels, ignored by losses."""
MAX_CLASSES = VOID_LABEL
"""Most classes (background included) a uint8 label map can hold: values 0..254, 255 being ``VOID_LABEL``."""
PAMR_ITERATIONS = 10
"""PAMR's iterations, the authors' setting (``model.pamr_iters`` and the op's default)."""
PAMR_DILATIONS = (1, 2, 4, 8, 12, 24)
"""PAMR's neighbourhood, the 8-pixel ring at each of these distances (``model.pamr_dilations``, the op's default)."""
PAMR_MODES = ("off", "per_scale", "fused")
"""How make-cam and the exported pseudo-labeller refine their maps with PAMR (``cam.pamr``)."""

PROG_TRAIN = "aesipe-train"
PROG_EXPORT = "aesipe-export"
PROG_LABEL = "aesipe-label"

__all__ = ["__version__", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_SUFFIXES", "PIXEL_SCALE", "VOID_LABEL", "MAX_CLASSES",
           "PAMR_ITERATIONS", "PAMR_DILATIONS", "PAMR_MODES", "PROG_TRAIN", "PROG_EXPORT", "PROG_LABEL"]
