"""The SIPE building blocks against hand-computed answers."""
from __future__ import annotations

import math

import pytest
import torch

from aesipe.models import sipe_modules as sm


def maps(*rows_per_channel):
    """maps([[a, b]], [[c, d]]) -> [1, K, h, w] tensor."""
    return torch.tensor([rows_per_channel], dtype=torch.float32)


def test_l2_normalise_uses_norm_plus_eps():
    x = torch.tensor([[[[3.0]], [[4.0]]]])  # one pixel, feature (3, 4), norm 5
    out = sm.l2_normalise(x)
    assert torch.allclose(out.flatten(), torch.tensor([3.0, 4.0]) / (5.0 + 1e-5))


def test_cam_with_background_relu_maxnorm_and_background():
    logits = maps([[2.0, -1.0], [1.0, 0.0]], [[0.0, 4.0], [-3.0, 1.0]])  # C=2 on a 2x2 grid
    cam = sm.cam_with_background(logits)
    fg1 = torch.tensor([[2.0, 0.0], [1.0, 0.0]]) / (2.0 + 1e-5)
    fg2 = torch.tensor([[0.0, 4.0], [0.0, 1.0]]) / (4.0 + 1e-5)
    assert torch.allclose(cam[0, 1], fg1) and torch.allclose(cam[0, 2], fg2)
    assert torch.allclose(cam[0, 0], 1 - torch.maximum(fg1, fg2))
    assert cam.shape == (1, 3, 2, 2)


def test_one_hot_argmax_is_masked_by_labels_but_keeps_background():
    m = maps([[0.1, 0.9]], [[0.8, 0.05]], [[0.2, 0.95]])  # K=3, 1x2 pixels
    mask = torch.tensor([1.0, 1.0, 0.0]).view(1, 3, 1, 1)  # class 2 absent from the image
    seeds = sm.one_hot_argmax(m, mask)
    assert seeds[0, :, 0, 0].tolist() == [0, 1, 0]
    assert seeds[0, :, 0, 1].tolist() == [0, 0, 0]  # its argmax (class 2) is not a tag: no seed at all


def test_soft_iou_with_orthogonal_features_is_the_hand_formula():
    # Two pixels with orthogonal features: corr = identity, so for pixel i:
    # inter = cam(i), union = 1 + sum(cam) - cam(i).
    features = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # [1, D=2, 1, 2]
    cam = maps([[0.6, 0.2]])
    iou = sm.soft_iou(cam, features)[0, 0, 0]
    scale = 1 / (1 + 1e-5) ** 2  # corr_ii after the +1e-5 normalisation
    expected = [0.6 * scale / (scale + 0.8 - 0.6 * scale), 0.2 * scale / (scale + 0.8 - 0.2 * scale)]
    assert iou.tolist() == pytest.approx(expected, rel=1e-5)


def test_soft_iou_correlation_is_relu_of_cosine():
    # Pixels with features at 60 degrees (cos 0.5) and one opposite (cos -1, ReLU -> 0).
    angle = math.pi / 3
    features = torch.tensor([[[[1.0, math.cos(angle), -1.0]], [[0.0, math.sin(angle), 0.0]]]])
    cam = maps([[1.0, 0.0, 0.0]])
    iou = sm.soft_iou(cam, features)[0, 0, 0]
    s = 1 / (1 + 1e-5) ** 2
    corr = torch.tensor([[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]]) * s
    inter = corr[:, 0]  # only pixel 0 is activated
    expected = inter / (corr.sum(1) + 1.0 - inter)
    assert torch.allclose(iou, expected, atol=1e-6)


def test_structure_seeds_halve_background_iou():
    features = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # orthogonal pixels: corr = identity
    cam = maps([[1.0, 1.0]], [[1.0, 0.0]])
    seeds_half = sm.structure_seeds(cam, features, torch.ones(1, 2, 1, 1), background_scale=0.5)
    seeds_full = sm.structure_seeds(cam, features, torch.ones(1, 2, 1, 1), background_scale=1.0)
    # IoUs at pixel 0: bg 1/(1+2-1)=0.5, fg 1/(1+1-1)=1 -> fg either way; pixel 1: bg 1/2, fg 0 -> bg.
    assert seeds_full[0, :, 0].tolist() == [[0, 1], [1, 0]]
    assert seeds_half[0, :, 0].tolist() == [[0, 1], [1, 0]]
    # Identical pixels (corr all ones): bg IoU = 2/(2+2-2) = 1, fg IoU = 0.7/(2+0.7-0.7) = 0.35,
    # so the background scale decides: x0.5 -> 0.5 > 0.35 (bg), x0.3 -> 0.3 < 0.35 (fg).
    cam = maps([[1.0, 1.0]], [[0.7, 0.0]])
    features3 = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.0]]]])
    seeds = sm.structure_seeds(cam, features3, torch.ones(1, 2, 1, 1), background_scale=0.3)
    assert seeds[0, :, 0, 0].tolist() == [0, 1]  # 0.3 < 0.35: the scale flips it to foreground
    seeds = sm.structure_seeds(cam, features3, torch.ones(1, 2, 1, 1), background_scale=0.5)
    assert seeds[0, :, 0, 0].tolist() == [1, 0]


def test_prototypes_are_means_and_empty_seed_gives_zero():
    features = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]], [[2.0, 2.0], [0.0, 4.0]]]])  # D=2, 2x2
    seeds = torch.zeros(1, 3, 2, 2)
    seeds[0, 0, 0, :] = 1  # top row
    seeds[0, 1, 1, 1] = 1  # one pixel
    protos = sm.prototypes(seeds, features)
    assert protos[0, 0].tolist() == [2.0, 2.0]
    assert protos[0, 1].tolist() == [7.0, 4.0]
    assert protos[0, 2].tolist() == [0.0, 0.0]


def test_reactivate_is_relu_cosine_and_zero_for_empty_prototype():
    features = torch.tensor([[[[1.0, 0.0, -1.0]], [[0.0, 2.0, 0.0]]]])  # D=2, 1x3: (1,0), (0,2), (-1,0)
    protos = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # K=2: diagonal, empty
    out = sm.reactivate(protos, features)
    c = 1 / math.sqrt(2)
    assert out[0, 0, 0].tolist() == pytest.approx([c, c, 0.0], abs=1e-6)  # cos(-1,0 . diag) < 0 -> 0
    assert out[0, 1].abs().max() == 0


def test_gsc_loss_against_max_normalised_target():
    cam = maps([[1.0, 0.0]], [[0.5, 0.5]])
    target = maps([[2.0, 1.0]], [[0.0, 4.0]])
    norm = target / (target.amax(dim=(2, 3), keepdim=True) + 1e-5)
    expected = (cam - norm).abs().mean()
    assert torch.allclose(sm.gsc_loss(cam, target), expected)
    assert sm.gsc_loss(cam, target).item() == pytest.approx((0 + 0.5 + 0.5 + 0.5) / 4, abs=1e-4)


def test_functions_are_branch_free_for_tracing():
    # A zero label vector (no foreground tag) must not need Python control flow: trace once, run on others.
    features = torch.randn(1, 4, 3, 3)
    cam = torch.rand(1, 3, 3, 3)

    def pipeline(cam, features, mask):
        seeds = sm.structure_seeds(cam, features, mask)
        return sm.reactivate(sm.prototypes(seeds, features), features)

    mask_a = torch.tensor([1.0, 1.0, 1.0]).view(1, 3, 1, 1)
    mask_b = torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1)
    traced = torch.jit.trace(pipeline, (cam, features, mask_a))
    assert torch.allclose(traced(cam, features, mask_b), pipeline(cam, features, mask_b))
    assert traced(cam, features, mask_b)[0, 1].abs().max() == 0
