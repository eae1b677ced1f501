"""``aesipe.models.inference``: BatchNorm folded into the convolutions (and channels-last) gives the same outputs
to float rounding, for every backbone and BatchNorm kind, and leaves no BatchNorm behind."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from aesipe.models.backbones import build_backbone
from aesipe.models.inference import fold_batchnorm_, for_inference


def _randomise_statistics(model: nn.Module, seed: int = 0) -> None:
    """Random-init backbones have identity BatchNorms (mean 0, var 1, scale 1, shift 0): folding those would
    prove nothing."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (FrozenBatchNorm2d, nn.BatchNorm2d)):
            n = module.running_mean.numel()
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)) for m in model.modules())


@pytest.mark.parametrize("name, bn", [("mobilenet_v2", "frozen"), ("mobilenet_v2", "frozen_stats"),
                                      ("mobilenet_v2", "train"), ("resnet50", "frozen")])
def test_folded_backbone_gives_the_same_features(name, bn):
    backbone = build_backbone(name, no_pretrained=True, bn=bn).eval()
    _randomise_statistics(backbone)
    assert _norms(backbone) > 0
    image = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = backbone(image)
        folded = for_inference(copy.deepcopy(backbone))
        got = folded(image)
    assert _norms(folded) == 0
    for want, have in zip(expected, got):
        scale = want.abs().max().item()
        assert torch.allclose(have, want, rtol=0, atol=1e-4 * scale), (have - want).abs().max().item()


def test_only_a_batchnorm_right_after_a_convolution_is_folded():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).eval()
    _randomise_statistics(model)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        fold_batchnorm_(model)
        assert isinstance(model[2], nn.BatchNorm2d) and isinstance(model[4], nn.Identity)  # ReLU sits between 0 and 2
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_a_training_model_is_refused():
    with pytest.raises(ValueError, match="inference"):
        fold_batchnorm_(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
