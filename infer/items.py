"""What travels between a ``Labeler``'s steps: ``Prepared`` (an image made ready for the graph) and
``Labelled`` (its result at its original size)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aesipe.imaging import DecodedImage


@dataclass
class Prepared:
    """One image made ready for the graph (built in a worker thread)."""

    decoded: DecodedImage
    tags: np.ndarray | None
    variants: list[tuple[float, bool, np.ndarray]] = field(default_factory=list)
    """(scale, flipped, padded float32 [3, Hp, Wp]) per test-time variant; the first is (1.0, False)."""
    confidence: bool = False
    """``finish_scored`` also returns the confidence map (the graph's scores are fetched for it)."""
    probabilities: bool = False
    """``finish_scored`` also returns the per-class probabilities at the image's size."""
    tiled: bool = False
    """Run tile by tile inside ``run_batch`` (``tiling.py``); ``variants`` stays empty."""

    @property
    def batch_key(self) -> tuple:
        """Images share a model call only when their keys are equal: same padded sizes and, for a
        pseudo-labeller, the same tags (its graph refines the union of a batch's tags with PAMR, so a
        batch of mixed tags does more work: MSRC val at batch 4 took ~10 % longer than at batch 1)."""
        if self.tiled:
            return ("tiles",)
        shapes = tuple(v[2].shape for v in self.variants)
        return shapes if self.tags is None else (shapes, self.tags.tobytes())


@dataclass(frozen=True)
class ZeroMaps:
    """The pseudo-labeller's ``fallback`` output for one image, carried after its score maps: bool [1 + C], the
    tagged classes whose map was zero everywhere and whose pre-ReLU CAM stood in (``cam.zero_map_fallback``)."""

    flags: np.ndarray


@dataclass
class Labelled:
    """One image's result at its original size."""

    labels: np.ndarray
    """uint8 H x W label values."""
    confidence: np.ndarray | None = None
    """uint8 H x W: round(255 x the probability of the written class), when asked for (a full-size float map
    of a 24-megapixel photo would take 96 MB)."""
    probabilities: np.ndarray | None = None
    """float32 [1 + C, H, W] (when asked for; a pseudo-labeller's classes not in the image's tags are 0)."""
    zero_maps: tuple[int, ...] = ()
    """Label values of tagged classes whose map was zero everywhere (a pseudo-labeller with the fallback
    output): their pre-ReLU CAM stood in, and the report counts such images."""
