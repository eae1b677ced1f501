"""IRN's random walk: class maps diffused along the affinities of an edge map, in memory linear in pixels.

The transition (as in IRN's ``propagate_to_edge``): for pixels p, q with q - p inside the search radius,
A[p, q] = A[q, p] = 1 - max(edge) along the straight path p -> q, A[p, p] = 1, other pairs 0;
S = A ** beta; T = S / column sums of S; x <- x * (1 - edge); result = x @ T ** (2 ** exp_times).

The reference builds T densely ((HW)^2 floats, ~0.5 GB for one VOC image) and squares it ``exp_times``
times. T^(2^n) applied to a row vector equals applying T 2^n times, and T has at most
(2 * radius - 1)^2 nonzeros per column, so ``propagate`` keeps only a [window, H, W] weight tensor and
applies x <- x @ T as a sparse (CSR) product or as shifted-window multiply-adds, ~(2 radius - 1)^2
nonzeros per pixel: same labels (to float tolerance), linear memory,
any image size. ``propagate_dense`` is the reference form, for small maps (tests, benchmark).
"""
from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn.functional as F

from aesipe.models.path_index import path_index


def pair_affinity(edge: torch.Tensor, radius: int) -> torch.Tensor:
    """Edge map [H, W] -> affinity of (p, p + d) for every half-plane direction d: [D, H, W].

    Pairs whose far end falls outside the image get 0: the map is padded with edge = 1, and a path
    always includes its far end.
    """
    index = path_index(radius)
    rf = index.radius_floor
    height, width = edge.shape
    # Sources are the real pixels: IRN's source crop starts at row 0 and column rf of this padding.
    padded = F.pad(edge[None, None], (rf, rf, 0, rf), value=1.0)[:, 0]
    return index.path_affinity(padded).view(index.num_directions, height, width)


def transition_weights(edge: torch.Tensor, radius: int, beta: float) -> torch.Tensor:
    """Column-normalised transition T as window weights [(2 rf + 1)^2, H * W] (rf = radius - 1).

    Row o of the result holds T[q + o, q] for every pixel q, o running over the window in ``unfold``
    order; offsets outside the radius or the image are 0.
    """
    index = path_index(radius)
    rf = index.radius_floor
    side = 2 * rf + 1
    height, width = edge.shape
    forward = pair_affinity(edge, radius).pow(beta)  # S[p, p + d] at p
    weights = edge.new_zeros(side, side, height, width)
    weights[rf, rf] = 1.0  # A[p, p] = 1
    backward = F.pad(forward, (rf, rf, rf, rf))
    for k, (dy, dx) in enumerate(index.directions):
        weights[rf + dy, rf + dx] = forward[k]  # S[q, q + d] at q
        # S[q, q - d] = S[q - d, q]: the forward weight stored at q - d.
        weights[rf - dy, rf - dx] = backward[k, rf - dy : rf - dy + height, rf - dx : rf - dx + width]
    weights = weights.view(side * side, height * width)
    # S is symmetric, so the column sum at q is the sum over q's window.
    return weights / weights.sum(dim=0, keepdim=True)


def transition_matrix(weights: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Window weights -> sparse CSR M [HW, HW] with M[q, q + o] = T[q + o, q], so x @ T = (M @ x^T)^T."""
    rf = _window_radius(weights)
    offsets = torch.arange(-rf, rf + 1, device=weights.device)
    off_y, off_x = torch.meshgrid(offsets, offsets, indexing="ij")
    ys, xs = torch.meshgrid(
        torch.arange(height, device=weights.device), torch.arange(width, device=weights.device), indexing="ij"
    )
    # [HW, window]: row q lists its window in raster order, so the column indices come out sorted.
    col_y = ys.reshape(-1, 1) + off_y.reshape(1, -1)
    col_x = xs.reshape(-1, 1) + off_x.reshape(1, -1)
    values = weights.t()
    keep = (col_y >= 0) & (col_y < height) & (col_x >= 0) & (col_x < width) & (values > 0)
    row_counts = keep.sum(dim=1)
    crow = torch.zeros(height * width + 1, dtype=torch.int64, device=weights.device)
    crow[1:] = torch.cumsum(row_counts, dim=0)
    columns = (col_y * width + col_x)[keep]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, columns, values[keep], (height * width, height * width))


def propagate(
    maps: torch.Tensor,
    edge: torch.Tensor,
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
    method: Literal["auto", "sparse", "window"] = "auto",
) -> torch.Tensor:
    """Random walk of ``maps`` [K, H, W] on ``edge`` [H, W] (probabilities in [0, 1]) -> [K, H, W].

    ``sparse``: one CSR matrix product per step (few kernel launches: best on CUDA); ``window``: the
    window's shifted slices, multiply-added (plain dense ops, no sparse kernels: best on CPU, see
    benchmarks/bench_random_walk.py); ``auto`` picks by device. Both apply T 2**exp_times times.
    """
    _check(maps, edge)
    if method == "auto":
        method = "sparse" if maps.is_cuda else "window"
    num_maps, height, width = maps.shape
    weights = transition_weights(edge.to(maps.dtype), radius, beta)
    state = maps * (1 - edge)
    steps = 2**exp_times
    if method == "sparse":
        matrix = transition_matrix(weights, height, width)
        column = state.reshape(num_maps, -1).t().contiguous()  # [HW, K]
        for _ in range(steps):
            column = matrix @ column
        return column.t().reshape(num_maps, height, width)
    if method != "window":
        raise ValueError(f"unknown random-walk method {method!r}")
    rf = _window_radius(weights)
    side = 2 * rf + 1
    grid = weights.view(side, side, height, width)
    used = [(a, b) for a in range(side) for b in range(side) if bool(grid[a, b].any())]
    for _ in range(steps):
        padded = F.pad(state, (rf, rf, rf, rf))
        state = torch.zeros_like(state)
        for a, b in used:
            state.addcmul_(padded[:, a : a + height, b : b + width], grid[a, b])
    return state


def propagate_dense(
    maps: torch.Tensor, edge: torch.Tensor, radius: int = 5, beta: float = 10.0, exp_times: int = 8
) -> torch.Tensor:
    """The reference algorithm: dense (HW)^2 affinity, repeated squaring. Small maps only."""
    _check(maps, edge)
    num_maps, height, width = maps.shape
    count = height * width
    index = path_index(radius)
    affinity = torch.eye(count, dtype=maps.dtype, device=maps.device)
    ys, xs = torch.meshgrid(
        torch.arange(height, device=maps.device), torch.arange(width, device=maps.device), indexing="ij"
    )
    for (dy, dx), path in zip(index.directions, index.paths):
        inside = (ys + dy < height) & (xs + dx >= 0) & (xs + dx < width)
        y0, x0 = ys[inside], xs[inside]
        on_path = torch.stack([edge[y0 + cy, x0 + cx] for cy, cx in path]).amax(dim=0)
        source, dest = y0 * width + x0, (y0 + dy) * width + (x0 + dx)
        affinity[source, dest] = (1 - on_path).to(maps.dtype)
        affinity[dest, source] = (1 - on_path).to(maps.dtype)
    scaled = affinity.pow(beta)
    transition = scaled / scaled.sum(dim=0, keepdim=True)
    for _ in range(exp_times):
        transition = transition @ transition
    walked = (maps * (1 - edge)).reshape(num_maps, count) @ transition
    return walked.view(num_maps, height, width)


def _window_radius(weights: torch.Tensor) -> int:
    side = int(round(weights.shape[0] ** 0.5))
    return (side - 1) // 2


def _check(maps: torch.Tensor, edge: torch.Tensor) -> None:
    if maps.dim() != 3 or edge.dim() != 2 or maps.shape[1:] != edge.shape:
        raise ValueError(f"maps must be [K, H, W] and edge [H, W] of the same size, got {tuple(maps.shape)}, "
                         f"{tuple(edge.shape)}")
