"""Random walk: linear-memory forms against the dense reference and against a hand-worked case."""
from __future__ import annotations

import pytest
import torch

from aesipe.train.propagation import propagate, propagate_dense, transition_matrix, transition_weights


def _inputs(height, width, num_maps=3, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    maps = torch.rand(num_maps, height, width, generator=gen, dtype=dtype)
    edge = torch.rand(height, width, generator=gen, dtype=dtype) ** 3  # mostly low, some strong edges
    return maps, edge


def test_hand_worked_one_row():
    # 1 x 3 map, radius 2 (pairs at distance 1 only), beta 1, one step (exp_times 0).
    # A = [[1, .5, 0], [.5, 1, .5], [0, .5, 1]] (path maxima of edge [0, .5, 0]); column sums 1.5, 2, 1.5.
    maps = torch.ones(1, 1, 3, dtype=torch.float64)
    edge = torch.tensor([[0.0, 0.5, 0.0]], dtype=torch.float64)
    x = torch.tensor([1.0, 0.5, 1.0], dtype=torch.float64)  # maps * (1 - edge)
    transition = torch.tensor([[2 / 3, 0.25, 0], [1 / 3, 0.5, 1 / 3], [0, 0.25, 2 / 3]], dtype=torch.float64)
    expected_one = x @ transition  # [5/6, 3/4, 5/6]
    torch.testing.assert_close(expected_one, torch.tensor([5 / 6, 0.75, 5 / 6], dtype=torch.float64))
    for method in ("sparse", "window"):
        got = propagate(maps, edge, radius=2, beta=1.0, exp_times=0, method=method)
        torch.testing.assert_close(got.flatten(), expected_one)
        got = propagate(maps, edge, radius=2, beta=1.0, exp_times=2, method=method)  # T applied 4 times
        torch.testing.assert_close(got.flatten(), x @ torch.linalg.matrix_power(transition, 4))
    dense = propagate_dense(maps, edge, radius=2, beta=1.0, exp_times=2)
    torch.testing.assert_close(dense.flatten(), x @ torch.linalg.matrix_power(transition, 4))


@pytest.mark.parametrize("size", [(7, 9), (16, 11), (13, 13), (1, 17), (21, 4)])
@pytest.mark.parametrize("method", ["sparse", "window"])
def test_linear_memory_forms_equal_the_dense_reference(size, method):
    maps, edge = _inputs(*size)
    expected = propagate_dense(maps, edge)  # radius 5, beta 10, exp_times 8: the recipe
    got = propagate(maps, edge, method=method)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    assert torch.equal(got.argmax(0), expected.argmax(0))


def test_float32_agrees_to_float_tolerance():
    maps, edge = _inputs(19, 14)
    expected = propagate_dense(maps, edge)
    got = propagate(maps.float(), edge.float())
    scale = expected.abs().max()
    assert float((got.double() - expected).abs().max() / scale) < 1e-3


def test_transition_is_column_stochastic_and_sparse():
    _, edge = _inputs(12, 10)
    weights = transition_weights(edge, radius=5, beta=10.0)
    matrix = transition_matrix(weights, 12, 10).to_dense()
    # x @ T with M = T^T: the rows of M (columns of T) sum to 1
    torch.testing.assert_close(matrix.sum(dim=1), torch.ones(120, dtype=edge.dtype))
    assert int((matrix != 0).sum(dim=1).max()) <= 2 * 34 + 1  # at most both half-planes + itself
    torch.testing.assert_close(weights.shape, (81, 120))


def test_an_edge_line_stops_the_walk():
    # A vertical wall of edge = 1 splits the map; mass seeded on the left stays on the left.
    height, width = 12, 20
    edge = torch.zeros(height, width, dtype=torch.float64)
    edge[:, 10] = 1.0
    maps = torch.zeros(1, height, width, dtype=torch.float64)
    maps[0, 3:9, 2:5] = 1.0
    walked = propagate(maps, edge)
    assert float(walked[0, :, 11:].max()) == 0.0
    assert float(walked[0, :, :10].min()) > 0.0  # spread over its whole region
    without_wall = propagate(maps, torch.zeros_like(edge))
    assert float(without_wall[0, :, 11:].max()) > 0.0


def test_large_map_runs_in_linear_memory():
    # 160 x 240 = 38,400 pixels: the dense transition would need 5.9 GB; the sparse one ~30 MB.
    maps, edge = _inputs(160, 240, num_maps=2, dtype=torch.float32)
    walked = propagate(maps, edge, exp_times=3)
    assert walked.shape == (2, 160, 240) and torch.isfinite(walked).all()


def test_shape_checks():
    with pytest.raises(ValueError, match="same size"):
        propagate(torch.zeros(2, 4, 5), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="unknown random-walk method"):
        propagate(torch.zeros(1, 4, 5), torch.zeros(4, 5), method="magic")
