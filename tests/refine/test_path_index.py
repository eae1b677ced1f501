"""PathIndex: directions, paths, per-pair affinities, displacements and pair labels, by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aesipe.models.path_index import PathIndex, direction_path, search_directions


def test_search_directions_by_hand():
    # radius 2: reach 1; (0,1), then dy=1 with dx in -1..1 (all have dy^2+dx^2 = 1 or 2 < 4)
    assert search_directions(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    # radius 3: (0,1),(0,2); dy=1: dx -2..2; dy=2: dx^2 < 5 -> -2..2
    assert len(search_directions(3)) == 12
    # the reference recipe's radii: 34 pairs per pixel at radius 5, 152 at radius 10
    assert len(search_directions(5)) == 34
    assert len(search_directions(10)) == 152
    for dy, dx in search_directions(7):  # one half-plane only, strictly inside the radius
        assert dy > 0 or (dy == 0 and dx > 0)
        assert dy * dy + dx * dx < 49


def test_direction_paths_by_hand():
    assert direction_path(0, 3) == [(0, 3), (0, 2), (0, 1), (0, 0)]
    # diagonal (2, 2): pixels with |x - y| < sqrt(2); the corners (0, 2) and (2, 0) are off the path
    assert sorted(direction_path(2, 2)) == sorted([(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2)])
    # (1, -2): |x + 2y| < sqrt(5) in the box y 0..1, x -2..0: every pixel but none farther
    path = direction_path(1, -2)
    assert path[0] == (1, -2) and (0, 0) in path and len(path) == 6


def _naive_affinity(edge: np.ndarray, index: PathIndex) -> np.ndarray:
    height, width = edge.shape
    h, w = index.source_size(height, width)
    rf = index.radius_floor
    out = np.zeros((index.num_directions, h * w))
    for k, path in enumerate(index.paths):
        for y in range(h):
            for x in range(w):
                out[k, y * w + x] = 1 - max(edge[y + cy, x + rf + cx] for cy, cx in path)
    return out


@pytest.mark.parametrize("size", [(9, 11), (12, 7)])
def test_path_affinity_matches_a_loop(size):
    index = PathIndex(3)
    edge = np.random.default_rng(1).random(size)
    got = index.path_affinity(torch.from_numpy(edge)[None, None])[0].numpy()
    np.testing.assert_allclose(got, _naive_affinity(edge, index), atol=1e-12)


def test_pair_displacement_and_target():
    index = PathIndex(2)
    disp = torch.zeros(1, 2, 4, 5)
    disp[0, 0] = torch.arange(4.0)[:, None]  # dy component = row index
    disp[0, 1] = torch.arange(5.0)[None, :]  # dx component = column index
    pairs = index.pair_displacement(disp)
    assert pairs.shape == (1, 2, 4, 3 * 3)  # sources: 3 rows x 3 columns (rf = 1)
    target = index.displacement_target()
    # D(p) - D(p + d) = -d for this field, everywhere
    torch.testing.assert_close(pairs, (-target).expand_as(pairs))


def test_affinity_labels_by_hand():
    index = PathIndex(2)  # directions (0,1), (1,-1), (1,0), (1,1); sources rows 0..1, cols 1..1
    labels = np.array([[0, 0, 1], [0, 1, 255], [2, 1, 1]], np.uint8)
    bg_pos, fg_pos, neg = index.affinity_labels(labels)
    assert bg_pos.shape == (4, 2)
    # source (0,1)=0: right (0,2)=1 neg; down-left (1,0)=0 bg; down (1,1)=1 neg; down-right (1,2)=255 skip
    # source (1,1)=1: right 255 skip; down-left (2,0)=2 neg; down (2,1)=1 fg; down-right (2,2)=1 fg
    np.testing.assert_array_equal(bg_pos[:, 0], [0, 1, 0, 0])
    np.testing.assert_array_equal(neg[:, 0], [1, 0, 1, 0])
    np.testing.assert_array_equal(fg_pos[:, 0] + bg_pos[:, 0] + neg[:, 0], [1, 1, 1, 0])
    np.testing.assert_array_equal(fg_pos[:, 1], [0, 0, 1, 1])
    np.testing.assert_array_equal(neg[:, 1], [0, 1, 0, 0])


def test_too_small_map_is_refused():
    with pytest.raises(ValueError, match="too small"):
        PathIndex(5).source_size(8, 8)
