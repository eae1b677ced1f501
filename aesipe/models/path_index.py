"""Pixel pairs within a radius and the straight paths between them (IRN's "path index").

IRN (Ahn et al., CVPR 2019) relates each pixel p to every pixel q = p + d with |d| < radius, where d runs
over one half-plane of offsets (the other half is the same pair seen from q). The affinity of a pair is
``1 - max(edge)`` over the pixels of the straight path from p to q (both ends included), so two pixels
separated by a class boundary have a low affinity.

Instead of gathering through huge flat index tensors, everything here works with shifted slices of the
map: memory stays linear in the number of pixels and any map size works without rebuilding indices.
The source pixels are those of IRN's crop: rows ``[0, H - rf)`` and columns ``[rf, W - rf)`` with
``rf = radius - 1``, so that every destination ``p + d`` stays inside the map.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def search_directions(radius: int) -> list[tuple[int, int]]:
    """Offsets (dy, dx) of one half-plane with dy**2 + dx**2 < radius**2: (0, 1..r-1), then dy > 0."""
    reach = int(math.ceil(radius)) - 1
    directions = [(0, dx) for dx in range(1, reach + 1) if dx * dx < radius * radius]
    for dy in range(1, reach + 1):
        for dx in range(-reach, reach + 1):
            if dy * dy + dx * dx < radius * radius:
                directions.append((dy, dx))
    return directions


def direction_path(dy: int, dx: int) -> list[tuple[int, int]]:
    """Pixels of the bounding box of (0,0)-(dy,dx) closer than 1 to the line through both ends.

    Sorted farthest first (by |y| + |x|), so the first entry is the destination (dy, dx) itself; the
    origin (0, 0) is always included.
    """
    length_sq = dy * dy + dx * dx
    coords = [
        (y, x)
        for y in range(min(0, dy), max(0, dy) + 1)
        for x in range(min(0, dx), max(0, dx) + 1)
        if (dy * x - dx * y) ** 2 < length_sq  # squared distance to the line < 1
    ]
    coords.sort(key=lambda c: -abs(c[0]) - abs(c[1]))
    return coords


class PathIndex:
    """The pairs and paths of one radius; methods map dense maps to per-pair values."""

    def __init__(self, radius: int):
        if radius < 2:
            raise ValueError(f"path radius must be at least 2, got {radius}")
        self.radius = radius
        self.radius_floor = int(math.ceil(radius)) - 1
        self.directions = search_directions(radius)
        self.paths = [direction_path(dy, dx) for dy, dx in self.directions]

    @property
    def num_directions(self) -> int:
        return len(self.directions)

    def source_size(self, height: int, width: int) -> tuple[int, int]:
        """Rows and columns of the source pixels for a map of this size."""
        rf = self.radius_floor
        h, w = height - rf, width - 2 * rf
        if h <= 0 or w <= 0:
            raise ValueError(f"map {height}x{width} is too small for path radius {self.radius}")
        return h, w

    def _shifted(self, x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        """x at p + (dy, dx) for every source pixel p: [..., h_src, w_src]."""
        h, w = self.source_size(x.shape[-2], x.shape[-1])
        rf = self.radius_floor
        return x[..., dy : dy + h, rf + dx : rf + dx + w]

    def path_affinity(self, edge: torch.Tensor) -> torch.Tensor:
        """Edge probabilities [B, 1, H, W] (or [B, H, W]) -> affinities [B, D, h_src * w_src].

        affinity(p, p + d) = 1 - max over the path of d of edge(p + c).
        """
        if edge.dim() == 4:
            edge = edge[:, 0]
        per_direction = []
        for path in self.paths:
            along = torch.stack([self._shifted(edge, y, x) for y, x in path], dim=0)
            per_direction.append(1 - along.amax(dim=0))
        return torch.stack(per_direction, dim=1).flatten(2)

    def pair_displacement(self, disp: torch.Tensor) -> torch.Tensor:
        """Displacement field [B, 2, H, W] -> D(p) - D(p + d) for every pair: [B, 2, D, h_src * w_src]."""
        source = self._shifted(disp, 0, 0)
        destinations = torch.stack([self._shifted(disp, dy, dx) for dy, dx in self.directions], dim=2)
        return (source.unsqueeze(2) - destinations).flatten(3)

    def displacement_target(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """(dy, dx) of every direction as [1, 2, D, 1]: what D(p) - D(p + d) should be within one object."""
        target = torch.tensor(self.directions, dtype=dtype, device=device).t()
        return target[None, :, :, None]

    def affinity_labels(self, labels: np.ndarray, num_values: int = 255) -> tuple[np.ndarray, ...]:
        """Label map (values >= ``num_values`` are unsure) -> (bg_pos, fg_pos, neg) float32 [D, n_src].

        A pair counts only when both ends are sure: positive when they share a label (background pairs and
        foreground pairs are kept apart), negative when the labels differ.
        """
        labels = np.asarray(labels)
        h, w = self.source_size(*labels.shape)
        rf = self.radius_floor
        source = labels[:h, rf : rf + w].reshape(1, -1)
        dest = np.stack([labels[dy : dy + h, rf + dx : rf + dx + w].reshape(-1) for dy, dx in self.directions])
        valid = (source < num_values) & (dest < num_values)
        equal = source == dest
        positive = equal & valid
        bg_pos = (positive & (source == 0)).astype(np.float32)
        fg_pos = (positive & (source > 0)).astype(np.float32)
        neg = (~equal & valid).astype(np.float32)
        return bg_pos, fg_pos, neg


@lru_cache(maxsize=8)
def path_index(radius: int) -> PathIndex:
    """Shared instances (the path lists are small but built in Python)."""
    return PathIndex(radius)
