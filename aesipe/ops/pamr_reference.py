"""PAMR (pixel-adaptive mask refinement), pure PyTorch: the executable specification.

Every fast path (the fused CPU/CUDA kernels, the ONNX decomposition) is tested against this file.
Semantics (docs/method.md, "PAMR exactly"), for image I [B,C,H,W] and mask M [B,K,H,W] at the same size:

* neighbours of pixel p: for each dilation d, the 8 pixels of the 3x3 ring at distance d (the centre
  is not a neighbour), with replicate padding at the borders -> P = 8 * len(dilations) neighbours;
* s_c(p): unbiased standard deviation, per colour channel, of the 9 taps (ring + centre) of every
  dilation, i.e. over 9 * len(dilations) samples (the centre is counted once per dilation);
* logit(p, q) = mean_c  -|I_c(p) - I_c(q)| / (1e-8 + 0.1 * s_c(p));
* a(p, .) = softmax of the logits over the P neighbours (computed once);
* num_iter times: M(p) <- sum_q a(p, q) M(q).

It is a pure gather: deterministic, no atomics. Memory is O(P * K * H * W) here (it materialises all
neighbours), which is exactly what the fused kernels avoid.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

# Offsets of the 3x3 ring in a fixed order (row-major, centre skipped). The fused kernels use the same
# order, so even the summation order matches.
RING_OFFSETS: tuple[tuple[int, int], ...] = (
    (-1, -1), (-1, 0), (-1, 1),
    (0, -1),           (0, 1),
    (1, -1),  (1, 0),  (1, 1),
)

STD_SCALE = 0.1
EPS = 1e-8


def _shifted(padded: torch.Tensor, dy: int, dx: int, pad: int, height: int, width: int) -> torch.Tensor:
    """View of ``padded`` [..., H+2pad, W+2pad] shifted by (dy, dx): value at p is x(p + (dy, dx))."""
    return padded[..., pad + dy: pad + dy + height, pad + dx: pad + dx + width]


def neighbours(x: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, P, H, W]: the P = 8 * len(dilations) ring neighbours, replicate-padded."""
    height, width = x.shape[-2:]
    pad = max(dilations)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    taps = [
        _shifted(padded, dy * d, dx * d, pad, height, width)
        for d in dilations
        for dy, dx in RING_OFFSETS
    ]
    return torch.stack(taps, dim=2)


def local_std(image: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, 1, H, W]: unbiased std over the 9 taps of every dilation."""
    ring = neighbours(image, dilations)
    centre = image.unsqueeze(2).expand(-1, -1, len(dilations), -1, -1)
    taps = torch.cat([ring, centre], dim=2)  # 9 * D samples; order is irrelevant to the std
    return taps.std(dim=2, keepdim=True, unbiased=True)


def affinity(image: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """[B, C, H, W] image -> [B, 1, P, H, W] affinity, softmax-normalised over the P neighbours."""
    std = local_std(image, dilations)
    diff = (image.unsqueeze(2) - neighbours(image, dilations)).abs()
    logits = (-diff / (EPS + STD_SCALE * std)).mean(dim=1, keepdim=True)
    return logits.softmax(dim=2)


def propagate(mask: torch.Tensor, aff: torch.Tensor, dilations: Sequence[int], num_iter: int) -> torch.Tensor:
    """Apply ``num_iter`` rounds of M(p) <- sum_q a(p, q) M(q); mask [B, K, H, W], aff [B, 1, P, H, W]."""
    for _ in range(num_iter):
        mask = (neighbours(mask, dilations) * aff).sum(dim=2)
    return mask


def pamr_reference(
    image: torch.Tensor,
    mask: torch.Tensor,
    dilations: Sequence[int],
    num_iter: int,
) -> torch.Tensor:
    """Reference PAMR on same-size inputs: image [B, C, H, W], mask [B, K, H, W] -> [B, K, H, W].

    Computes in the inputs' floating dtype promoted to at least float32 and returns the mask's dtype.
    """
    out_dtype = mask.dtype
    work = torch.promote_types(torch.promote_types(image.dtype, mask.dtype), torch.float32)
    image = image.to(work)
    mask = mask.to(work)
    if num_iter == 0:
        return mask.to(out_dtype)
    aff = affinity(image, dilations)
    return propagate(mask, aff, dilations, num_iter).to(out_dtype)
