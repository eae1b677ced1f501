"""Hand-worked PAMR cases. Every expected number was worked out by hand (derivations in the comments),
not produced by any implementation; each case runs on every implementation (reference, standard-op
decomposition, fused CPU, fused CUDA when a GPU is present).

Notation: ring offsets in order (-1,-1) (-1,0) (-1,1) (0,-1) (0,1) (1,-1) (1,0) (1,1), times the
dilation; coordinates outside the image clamp to the border (replicate padding).
"""
from __future__ import annotations

import math

import pytest
import torch

from aesipe.ops import pamr

# Mask used on a 3x3 grid: value = 3 * y + x.
GRID_3X3 = [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]


def run(implementation, image, mask, dilations, num_iter):
    fn, device = implementation
    return fn(image.to(device), mask.to(device), dilations, num_iter).cpu()


def as_mask(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)[None, None]


def flat_image(height, width, channels=3) -> torch.Tensor:
    return torch.full((1, channels, height, width), 0.7)


def test_constant_image_one_iteration_is_the_mean_of_the_ring(implementation):
    # A constant image gives |I(p) - I(q)| = 0, so every logit is 0 and each of the 8 neighbours weighs
    # 1/8: one iteration is the plain mean of the replicate-padded ring (centre excluded).
    # (0,0): ring 0,0,1 / 0,1 / 3,3,4 = 12   (0,1): 0,1,2 / 0,2 / 3,4,5 = 17   (0,2): 1,2,2 / 1,2 / 4,5,5 = 22
    # (1,0): 0,0,1 / 3,4 / 6,6,7 = 27        (1,1): all but 4 = 32              (1,2): 1,2,2 / 4,5 / 7,8,8 = 37
    # (2,0): 3,3,4 / 6,7 / 6,6,7 = 42        (2,1): 3,4,5 / 6,8 / 6,7,8 = 47    (2,2): 4,5,5 / 7,8 / 7,8,8 = 52
    expected = [[12 / 8, 17 / 8, 22 / 8], [27 / 8, 32 / 8, 37 / 8], [42 / 8, 47 / 8, 52 / 8]]
    out = run(implementation, flat_image(3, 3), as_mask(GRID_3X3), (1,), 1)
    torch.testing.assert_close(out, as_mask(expected))


def test_two_dilations_average_both_rings(implementation):
    # Dilation 2 on a 3x3 grid: y-2 clamps to row 0 and y+2 to row 2 (same for columns), so the ring of
    # (y,x) is (0,0),(0,x),(0,2),(y,0),(y,2),(2,0),(2,x),(2,2) = 0 + x + 2 + 3y + (3y+2) + 6 + (6+x) + 8
    # = 24 + 2x + 6y. With dilations (1, 2) each of the 16 neighbours weighs 1/16: (ring1 + ring2) / 16.
    ring1 = [[12, 17, 22], [27, 32, 37], [42, 47, 52]]
    expected = [[(ring1[y][x] + 24 + 2 * x + 6 * y) / 16 for x in range(3)] for y in range(3)]
    assert expected[0][0] == 2.25 and expected[2][2] == 92 / 16
    out = run(implementation, flat_image(3, 3), as_mask(GRID_3X3), (1, 2), 1)
    torch.testing.assert_close(out, as_mask(expected))


@pytest.mark.parametrize("dilation", [3, 5, 1000])
def test_dilation_larger_than_the_image_clamps_to_the_borders(implementation, dilation):
    # Any step >= 2 leaves a 3x3 grid, so the ring is the dilation-2 one above: (24 + 2x + 6y) / 8.
    expected = [[3.0, 3.25, 3.5], [3.75, 4.0, 4.25], [4.5, 4.75, 5.0]]
    out = run(implementation, flat_image(3, 3), as_mask(GRID_3X3), (dilation,), 1)
    torch.testing.assert_close(out, as_mask(expected))


def test_one_hot_centre_is_not_its_own_neighbour(implementation):
    # Mask 1 at (1,1): every other pixel has (1,1) exactly once in its ring -> 1/8; (1,1) itself has it
    # zero times (the centre is excluded). The complementary channel gets 1 minus that (weights sum to 1).
    one_hot = torch.tensor([[0.0, 0, 0], [0, 1, 0], [0, 0, 0]])
    mask = torch.stack([one_hot, 1 - one_hot])[None]
    expected0 = torch.tensor([[1.0, 1, 1], [1, 0, 1], [1, 1, 1]]) / 8
    out = run(implementation, flat_image(3, 3), mask, (1,), 1)
    torch.testing.assert_close(out, torch.stack([expected0, 1 - expected0])[None])


def test_one_hot_corner_counts_replicated_border_pixels(implementation):
    # Mask 1 at (0,0). (0,0): offsets (-1,-1), (-1,0), (0,-1) all clamp to (0,0) -> 3/8.
    # (0,1): (-1,-1) and (0,-1) clamp to (0,0) -> 2/8. (1,0): (-1,-1) and (-1,0) -> 2/8. (1,1): (-1,-1) -> 1/8.
    mask = as_mask([[1.0, 0, 0], [0, 0, 0], [0, 0, 0]])
    expected = as_mask([[3 / 8, 2 / 8, 0], [2 / 8, 1 / 8, 0], [0, 0, 0]])
    torch.testing.assert_close(run(implementation, flat_image(3, 3), mask, (1,), 1), expected)


def test_single_pixel_image_keeps_the_mask(implementation):
    # 1x1: every neighbour is the pixel itself (std 0, logits 0), so every iteration returns the mask.
    image = torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1)
    mask = torch.tensor([0.2, 0.3, 0.5]).view(1, 3, 1, 1)
    out = run(implementation, image, mask, (1, 2, 4, 8, 12, 24), 10)
    torch.testing.assert_close(out, mask, atol=1e-6, rtol=0)


def test_two_by_three_constant_image(implementation):
    # Mask [[0,1,2],[3,4,5]]; rows clamp to 0..1. (0,0): 0,0,1 / 0,1 / 3,3,4 = 12
    # (0,1): 0,1,2 / 0,2 / 3,4,5 = 17   (0,2): 1,2,2 / 1,2 / 4,5,5 = 22   (1,0): 0,0,1 / 3,4 / 3,3,4 = 18
    # (1,1): 0,1,2 / 3,5 / 3,4,5 = 23   (1,2): 1,2,2 / 4,5 / 4,5,5 = 28; each over 8.
    mask = as_mask([[0.0, 1, 2], [3, 4, 5]])
    expected = as_mask([[12 / 8, 17 / 8, 22 / 8], [18 / 8, 23 / 8, 28 / 8]])
    torch.testing.assert_close(run(implementation, flat_image(2, 3), mask, (1,), 1), expected)


def test_two_iterations_on_a_one_by_two_image(implementation):
    # 1x2, constant image, mask [0, 1]. Pixel 0's ring: columns clamp(x-1), x, x+1 over three rows that
    # all clamp to row 0 -> column 0 five times (-1,-1) (-1,0) (0,-1) (1,-1) (1,0), column 1 three times.
    # Iteration 1: [3/8, 5/8]. Iteration 2: [(5*3/8 + 3*5/8)/8, (3*3/8 + 5*5/8)/8] = [30/64, 34/64].
    mask = as_mask([[0.0, 1.0]])
    out1 = run(implementation, flat_image(1, 2), mask, (1,), 1)
    out2 = run(implementation, flat_image(1, 2), mask, (1,), 2)
    torch.testing.assert_close(out1, as_mask([[3 / 8, 5 / 8]]))
    torch.testing.assert_close(out2, as_mask([[30 / 64, 34 / 64]]))


@pytest.mark.parametrize("channels", [1, 2])
def test_edge_affinity_with_the_std_and_channel_mean(implementation, channels):
    # 1x2 image, channel 0 = [0, 1], channel 1 (if any) = [0, 0]; mask [0, 1].
    # Pixel 0, channel 0: taps = centre 0 + ring (five 0s, three 1s) = six 0s and three 1s; mean 1/3,
    # unbiased var = (6 * 1/9 + 3 * 4/9) / 8 = 1/4, std 1/2, logit of a 1-neighbour = -1 / (1e-8 + 0.05).
    # Channel 1 is flat: std 0 and differences 0, so it adds 0 to every logit; the channel mean halves it.
    # Weights: five neighbours of logit 0, three of logit l -> pixel 0 = 3 e^l / (5 + 3 e^l); pixel 1 is
    # the mirror image: 5 / (5 + 3 e^l).
    logit = -1.0 / (1e-8 + 0.05) / channels
    e = math.exp(logit)
    image = torch.zeros(1, channels, 1, 2)
    image[0, 0, 0, 1] = 1.0
    out = run(implementation, image, as_mask([[0.0, 1.0]]), (1,), 1)
    expected = as_mask([[3 * e / (5 + 3 * e), 5 / (5 + 3 * e)]])
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("scale", [0.01, 255.0])
def test_image_scaling_leaves_the_result_unchanged(implementation, scale):
    # Differences and the std scale together, so logits are invariant (up to the 1e-8 epsilon).
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 7, 6, generator=gen)
    mask = torch.rand(1, 2, 7, 6, generator=gen)
    base = run(implementation, image, mask, (1, 2), 3)
    scaled = run(implementation, image * scale, mask, (1, 2), 3)
    torch.testing.assert_close(scaled, base, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_num_iter_zero_returns_the_resized_mask(backend, op_library):
    # 2x2 -> 3x3 bilinear with align_corners=True puts the new samples exactly halfway:
    # [[0, 1], [2, 3]] -> [[0, .5, 1], [1, 1.5, 2], [2, 2.5, 3]].
    mask = as_mask([[0.0, 1.0], [2.0, 3.0]])
    out = pamr(torch.rand(1, 3, 3, 3), mask, num_iter=0, backend=backend)
    torch.testing.assert_close(out, as_mask([[0.0, 0.5, 1.0], [1.0, 1.5, 2.0], [2.0, 2.5, 3.0]]))
