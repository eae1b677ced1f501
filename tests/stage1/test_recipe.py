"""The recipe switches that follow the authors' effective behaviour (docs/method.md): BatchNorm affine,
the optimiser step, the AE seeds' mask and the AE resizes."""
from __future__ import annotations

import pytest
import torch

from aesipe.models.aesipe_net import AESIPENet
from aesipe.models.backbones import FrozenStatsBatchNorm2d, build_backbone
from aesipe.train.engine import resolve_lr


def test_frozen_stats_batchnorm_trains_scale_and_shift_of_trainable_stages_only():
    torch.manual_seed(0)
    backbone = build_backbone("mobilenet_v2", no_pretrained=True, bn="frozen_stats")
    norms = [m for m in backbone.modules() if isinstance(m, FrozenStatsBatchNorm2d)]
    assert norms
    late = [m for m in backbone.stages[2].modules() if isinstance(m, FrozenStatsBatchNorm2d)]
    early = [m for m in backbone.stages[0].modules() if isinstance(m, FrozenStatsBatchNorm2d)]
    assert all(m.weight.requires_grad and m.bias.requires_grad for m in late)
    assert not any(m.weight.requires_grad for m in early)
    stats = [m.running_var.clone() for m in late]
    backbone.train()
    backbone(torch.randn(2, 3, 32, 32))[3].sum().backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in late)  # scale/shift learn
    assert all(m.weight.grad is None for m in early)
    assert all(torch.equal(s, m.running_var) for s, m in zip(stats, late))  # statistics stay


def test_frozen_and_frozen_stats_checkpoints_load_into_each_other():
    trained = build_backbone("mobilenet_v2", no_pretrained=True, bn="frozen_stats")
    frozen = build_backbone("mobilenet_v2", no_pretrained=True, bn="frozen")
    assert trained.state_dict().keys() == frozen.state_dict().keys()
    frozen.load_state_dict(trained.state_dict(), strict=True)
    trained.load_state_dict(frozen.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(trained.eval()(x)[3], frozen.eval()(x)[3])
    assert not any(p.requires_grad for n, p in frozen.named_parameters() if "1.weight" in n and "stages.2" in n
                   and p.dim() == 1)  # FrozenBatchNorm2d has no parameters at all


@pytest.mark.parametrize("lr, reference, expected", [(None, False, 0.01), (None, True, 0.1), (0.05, True, 0.05)])
def test_default_lr_is_the_papers_or_the_codes_with_its_optimiser(lr, reference, expected):
    assert resolve_lr(lr, reference) == expected


def _net(**switches) -> AESIPENet:
    torch.manual_seed(0)
    return AESIPENet(3, backbone="mobilenet_v2", no_pretrained=True, bn="train", pamr_iters=2,
                     pamr_dilations=(1, 2), pamr_backend="reference", **switches).eval()


def test_ae_seeds_ignore_the_crop_valid_mask_unless_asked():
    image = torch.randn(1, 3, 64, 64)
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    valid = torch.ones(1, 64, 64)
    valid[:, :, 40:] = 0  # the right part of the crop is padding
    authors, masked = _net(), _net(mask_ae_seeds=True)
    masked.load_state_dict(authors.state_dict())
    with torch.no_grad():
        a = authors(image, labels, valid)["aeiscam"]
        b = masked(image, labels, valid)["aeiscam"]
        full_a = authors(image, labels, torch.ones(1, 64, 64))["aeiscam"]
        full_b = masked(image, labels, torch.ones(1, 64, 64))["aeiscam"]
    assert not torch.allclose(a, b)  # the padding's seeds shape the prototypes
    assert torch.allclose(full_a, full_b)  # without padding the switch changes nothing


@pytest.mark.parametrize("corners, exact", [(True, True), (False, False)])
def test_ae_resize_round_trip_is_exact_with_align_corners(corners, exact):
    # With zero PAMR iterations the AE step is only the two resizes; a linear ramp survives bilinear
    # resizing exactly when the corners are aligned, and is bent at the borders otherwise.
    net = AESIPENet(3, backbone="mobilenet_v2", no_pretrained=True, bn="train", pamr_iters=0,
                    pamr_backend="reference", ae_align_corners=corners)
    ramp = torch.linspace(0, 1, 13).view(1, 1, 1, 13).expand(1, 4, 9, 13).contiguous()
    refined = net._refine_with_pamr(torch.randn(1, 3, 9 * 16, 13 * 16), ramp, torch.ones(1, 4, 1, 1))
    assert torch.allclose(refined, ramp, atol=1e-5) is exact
