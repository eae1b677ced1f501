"""A candidate for PAMR inside ONNX: row tiles of static Slices inside two nested ONNX Scans (measured by
bench_pamr_onnx.py, not adopted; benchmarks/RESULTS.md, "PAMR inside ONNX").

The affinity is computed once; each iteration is the sum over the P = 8 * len(dilations) neighbours of
``weight_j * shifted(mask)``, every shift a static Slice of a replicate-padded map. The work is cut into
tiles of ``TILE_ROWS`` output rows; tiles and iterations are two nested ``torch`` scans (two nested ONNX
Scan nodes), so the file holds one copy of the per-tile arithmetic (~380 nodes) and a tile's intermediates
stay in L2. Maps travel rows first, ``[rows, B, K, W]``: a tile's source rows are one Gather of contiguous
row blocks; rows are replicate-padded by clamping the Gather indices, columns by one Pad per iteration.

Why it is not the exported form: alone it exports and runs at ~3x the speed of the one-hot convolution
form, but inside the whole pseudo-labeller torch.onnx.export's first strategy fails on the scans and its
fallback traces outside the ONNX-export context, which records the custom op (no stock-ORT file).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from aesipe.ops.pamr_reference import EPS, RING_OFFSETS, STD_SCALE

# Output rows per tile. Smaller tiles keep more of the intermediates in L2 but cost more node launches;
# 4 was fastest of 2/3/4/8/16 at 1 x 21 x 321 x 321 and 4 x 21 x 93 x 125 on a 2 MiB-L2 CPU.
TILE_ROWS = 4


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def _scan(body, init, xs: tuple):
    """``torch``'s scan (one ONNX Scan once exported) while tracing; the same body in a Python loop eagerly.

    ``body(carry, x) -> (carry, out)``; ``xs`` is a tuple of tensors scanned along dim 0; returns the
    final carry and the stacked outputs. Eager mode skips the scan operator, which would compile the body.
    """
    if _tracing():
        from torch._higher_order_ops import scan

        return scan(body, init, xs)
    carry, outs = init, []
    for i in range(xs[0].shape[0]):
        carry, out = body(carry, tuple(x[i] for x in xs))
        outs.append(out)
    return carry, torch.stack(outs)


def _row_groups(dilations: Sequence[int]) -> list[tuple[int, list[tuple[int, int]]]]:
    """``[(dy, [(j, dx), ...]), ...]``: neighbour j's offset (dy, dx), grouped by dy; dy = 0 always present."""
    groups: dict[int, list[tuple[int, int]]] = {0: []}
    for j, (d, (dy, dx)) in enumerate((d, o) for d in dilations for o in RING_OFFSETS):
        groups.setdefault(dy * d, []).append((j, dx * d))
    return sorted(groups.items())


def _columns(band: torch.Tensor, dx: int, pad: int) -> torch.Tensor:
    """Columns x + dx of a band padded by ``pad`` columns on each side (a static Slice)."""
    return band[..., pad + dx:(dx - pad) or None]


def _affinity_tiles(image, dilations, groups, sources) -> torch.Tensor:
    """Image [B, C, H, W] -> [tiles, T, B, P, W]: the softmax-normalised affinity of every row tile."""
    pad = max(dilations)
    repeats = len(dilations)  # the centre is one tap per dilation
    taps = 9 * repeats
    wide = F.pad(image.permute(2, 0, 1, 3), (pad, pad, 0, 0), mode="replicate")  # [H, B, C, W + 2 pad]

    def tile(carry, rows):
        ring: list = [None] * (8 * repeats)
        centre = None
        for (dy, cols), source in zip(groups, rows):
            band = wide.index_select(0, source)
            if dy == 0:
                centre = _columns(band, 0, pad)
            for j, dx in cols:
                ring[j] = _columns(band, dx, pad)
        ring = torch.stack(ring, dim=3)  # [T, B, C, P, W]
        centre = centre.unsqueeze(3)
        mean = (ring.sum(dim=3, keepdim=True) + repeats * centre) / taps
        sq = ((ring - mean) ** 2).sum(dim=3, keepdim=True) + repeats * (centre - mean) ** 2
        std = (sq / (taps - 1)).sqrt()
        logits = (-(centre - ring).abs() / (EPS + STD_SCALE * std)).mean(dim=2)  # [T, B, P, W]
        return carry.clone(), logits.softmax(dim=2)

    return _scan(tile, image.new_zeros(()), tuple(sources))[1]


def _propagate(start, aff_tiles, dilations, groups, sources, num_iter) -> torch.Tensor:
    """``num_iter`` rounds of M(p) <- sum_q a(p, q) M(q) on a rows-first map [tiles * T, B, K, W]."""
    pad = max(dilations)

    def iteration(current, step):
        wide = F.pad(current, (pad, pad, 0, 0), mode="replicate")

        def tile(carry, xs):
            *rows, aff = xs
            weights = aff.split(1, dim=2)  # P x [T, B, 1, W]
            total = None
            for (_, cols), source in zip(groups, rows):
                if not cols:
                    continue
                band = wide.index_select(0, source)  # [T, B, K, W + 2 pad]
                for j, dx in cols:
                    term = _columns(band, dx, pad) * weights[j]
                    total = term if total is None else total + term
            return carry.clone(), total

        out = _scan(tile, current.new_zeros(()), (*sources, aff_tiles))[1]  # [tiles, T, B, K, W]
        return out.reshape(current.shape), step[0].clone()

    return _scan(iteration, start, (start.new_zeros(num_iter),))[0]


def pamr_decomposed(
    image: torch.Tensor,
    mask: torch.Tensor,
    dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
    num_iter: int = 10,
    tile_rows: int = TILE_ROWS,
) -> torch.Tensor:
    """Same contract as ``pamr_reference``: same-size inputs, at least float32 compute, mask's dtype out."""
    out_dtype = mask.dtype
    work = torch.promote_types(torch.promote_types(image.dtype, mask.dtype), torch.float32)
    image, mask = image.to(work), mask.to(work)
    if num_iter == 0:
        return mask.to(out_dtype)
    if not _tracing() and mask.numel() == 0:
        # Nothing to refine (replicate Pad refuses empty rows-first maps). Not tested while tracing: a
        # size test there would become a guard on the dynamic dimensions.
        return mask.to(out_dtype).clone()
    dilations = tuple(int(d) for d in dilations)
    groups = _row_groups(dilations)
    height = mask.shape[2]
    count = (height + tile_rows - 1) // tile_rows
    grid = torch.arange(count * tile_rows, device=mask.device).view(count, tile_rows)
    # Per row offset dy, [tiles, T]: the source row of every output row (clamped = replicate padding; the
    # last tile's overhanging rows repeat row H - 1). Separate tensors, not views of one: scan refuses
    # inputs that alias each other.
    sources = [(grid + dy).clamp(0, height - 1) for dy, _ in groups]
    aff = _affinity_tiles(image, dilations, groups, sources)
    # The carried map keeps the overhanging rows: no Gather reads them (sources stop at H - 1), so they
    # are cropped once at the end instead of every iteration.
    start = mask.permute(2, 0, 1, 3).index_select(0, grid.flatten().clamp(max=height - 1))
    out = _propagate(start, aff, dilations, groups, sources, num_iter)
    out = out.index_select(0, torch.arange(height, device=mask.device)).permute(1, 2, 0, 3)
    return out.contiguous().to(out_dtype)
