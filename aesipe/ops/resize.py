"""Bicubic rescaling by a factor: torch's kernel eagerly, two separable passes of gathers in ONNX.

``resize_bicubic(x, s)`` is ``F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)``
(a = -0.75, no antialiasing, edge taps clamped, output size ``floor(size * s)``). While
``torch.onnx.export`` runs it records ``bicubic_by_gathers`` instead, the same arithmetic to float
rounding (tested): torch's bicubic exports as one ONNX ``Resize`` (cubic), which ONNX Runtime's CPU
provider runs slowly -- in the exported pseudo-labeller the image's resizes to scales 1.5 and 2.0 took
~160 ms of ~1 s per MSRC photo (benchmarks/RESULTS.md, "Pseudo-labeller speed"). The gather form is four
``Gather``s along one axis and a weighted sum per pass (linear in the output size; a dense interpolation
matrix would be quadratic). Eagerly and under ``torch.jit.trace`` torch's own kernel stays: it is fast
there, and the gather form's output size is Python arithmetic that a trace would freeze.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._export_context import onnx_exporting

CUBIC_A = -0.75
"""The cubic convolution coefficient of torch's (and ONNX Runtime's) bicubic."""


def _cubic_weights(t: torch.Tensor) -> list[torch.Tensor]:
    """Keys' cubic kernel at distances 1 + t, t, 1 - t, 2 - t from the four taps (t in [0, 1))."""
    a = CUBIC_A

    def near(x: torch.Tensor) -> torch.Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _resize_axis(x: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    size_in = x.shape[dim]
    size_out = math.floor(size_in * scale)
    # torch maps output pixel o to source (o + 0.5) / s - 0.5 with the factor the caller gave (not
    # in / out), and does not clamp it for cubic: taps past an edge repeat the edge pixel.
    source = (torch.arange(size_out, dtype=x.dtype, device=x.device) + 0.5) * (1.0 / scale) - 0.5
    first = source.floor()
    weights = _cubic_weights(source - first)
    first = first.long()
    shape = [1] * x.dim()
    shape[dim] = size_out
    total = None
    for tap, weight in enumerate(weights):
        index = (first + (tap - 1)).clamp(0, size_in - 1)
        term = x.index_select(dim, index) * weight.view(shape)
        total = term if total is None else total + term
    return total


def bicubic_by_gathers(image: torch.Tensor, scale: float) -> torch.Tensor:
    """The standard-op form: width pass, then height pass, as torch's kernel orders them."""
    return _resize_axis(_resize_axis(image, 3, scale), 2, scale)


def resize_bicubic(image: torch.Tensor, scale: float) -> torch.Tensor:
    """``image`` [B, C, H, W] (float) rescaled by ``scale`` on both axes: [B, C, floor(H s), floor(W s)]."""
    if scale == 1.0:
        return image
    if onnx_exporting():
        return bicubic_by_gathers(image, scale)
    return F.interpolate(image, scale_factor=scale, mode="bicubic", align_corners=False)
