"""PAMR in standard operators only: replicate Pad + constant one-hot 3x3 dilated Conv.

``aesipe.pamr`` switches to this form while ``torch.onnx.export`` runs, so an exported file needs no
custom op and runs in stock ONNX Runtime at any H x W. Same semantics as ``pamr_reference`` (tested
against it). Per dilation d, the 8 ring shifts of a map are one grouped convolution (dilation d) of
the replicate-padded map with a fixed one-hot kernel; the convolution form exports to far fewer nodes
than shifted slices (measured when this was written: the slice form takes ~150 s and ~1,400 nodes at 10
iterations x 6 dilations; this one ~300 nodes and ~20 s here, most of it torch.export's fixed cost). Measured in ONNX
Runtime at 1 x 21 x 321 x 321 (2 cores): 6.1 s and 0.6 GB peak, against 9.0 s and 1.3 GB for the variant
that concatenates all dilations' shifts before weighting them.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .pamr_reference import EPS, RING_OFFSETS, STD_SCALE

# Row r of the 3x3 window selecting ring cell r (same order as RING_OFFSETS): a one-hot kernel.
_RING_KERNEL = [
    [[[1.0 if (row - 1, col - 1) == offset else 0.0 for col in range(3)] for row in range(3)]]
    for offset in RING_OFFSETS
]


def ring_kernel(like: torch.Tensor) -> torch.Tensor:
    """[8, 1, 3, 3] one-hot kernel: output channel r of a conv with it is ring cell r."""
    return torch.tensor(_RING_KERNEL, dtype=like.dtype, device=like.device)


def _replicate_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad the last two dims of a 4-D or 5-D tensor by ``pad`` (ONNX Pad, mode "edge")."""
    return F.pad(x, (pad,) * 4 + (0, 0) * (x.dim() - 4), mode="replicate")


def affinity(image: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """[B, C, H, W] -> [B, P, H, W], softmax over the P = 8 * len(dilations) neighbours."""
    channels = image.shape[1]
    kernel = ring_kernel(image).repeat(channels, 1, 1, 1)  # grouped conv: channel 8c + r = cell r of c
    ring = torch.cat(
        [
            F.conv2d(_replicate_pad(image, d), kernel, dilation=d, groups=channels).unflatten(1, (channels, 8))
            for d in dilations
        ],
        dim=2,
    )  # [B, C, P, H, W]
    centre = image.unsqueeze(2)
    repeats = len(dilations)  # the centre is one tap per dilation
    taps = 9 * repeats
    mean = (ring.sum(dim=2, keepdim=True) + repeats * centre) / taps
    sq = ((ring - mean) ** 2).sum(dim=2, keepdim=True) + repeats * (centre - mean) ** 2
    std = (sq / (taps - 1)).sqrt()
    logits = (-(centre - ring).abs() / (EPS + STD_SCALE * std)).mean(dim=1)
    # Written out: ONNX Runtime runs a Softmax over a non-last axis as transpose + last-axis kernel +
    # transpose, ~8x slower than these four operators at [1, 48, 106, 160] (2 cores).
    exp = (logits - logits.amax(dim=1, keepdim=True)).exp()
    return exp / exp.sum(dim=1, keepdim=True)


def propagate(mask: torch.Tensor, aff: torch.Tensor, dilations: Sequence[int], num_iter: int) -> torch.Tensor:
    """``num_iter`` rounds of M(p) <- sum_q a(p, q) M(q); mask [B, K, H, W], aff [B, P, H, W].

    The mask travels as a [B, 1, K, H, W] volume: a 3-D conv with a [8, 1, 1, 3, 3] kernel yields the 8
    ring shifts as [B, 8, K, H, W], which broadcasts against the [B, 8, 1, H, W] weights without any
    Reshape, and only one dilation's shifts are alive at a time.
    """
    kernel = ring_kernel(mask).unsqueeze(2)  # [8, 1, 1, 3, 3]
    weights = [aff[:, 8 * i:8 * (i + 1)].unsqueeze(2) for i in range(len(dilations))]  # [B, 8, 1, H, W]
    volume = mask.unsqueeze(1)
    for _ in range(num_iter):
        total = None
        for d, w in zip(dilations, weights):
            term = F.conv3d(_replicate_pad(volume, d), kernel, dilation=(1, d, d)) * w
            total = term if total is None else total + term
        volume = total.sum(dim=1, keepdim=True)
    return volume.squeeze(1)


def pamr_decomposed(
    image: torch.Tensor,
    mask: torch.Tensor,
    dilations: Sequence[int],
    num_iter: int,
) -> torch.Tensor:
    """Same contract as ``pamr_reference``: same-size inputs, at least float32 compute, mask's dtype out."""
    out_dtype = mask.dtype
    work = torch.promote_types(torch.promote_types(image.dtype, mask.dtype), torch.float32)
    image, mask = image.to(work), mask.to(work)
    if num_iter == 0:
        return mask.to(out_dtype)
    return propagate(mask, affinity(image, dilations), dilations, num_iter).to(out_dtype)
