"""IRN and DeepLabV3 networks: shapes, what trains, losses, weight loading (random init, tiny inputs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from aesipe.models.deeplab import build_deeplabv3
from aesipe.models.irn import build_irn, irn_losses
from aesipe.models.path_index import PathIndex
from aesipe.utils.errors import UserError


@pytest.fixture(scope="module")
def tiny_irn():
    torch.manual_seed(0)
    return build_irn("mobilenet_v2", no_pretrained=True)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50"])
def test_irn_forward_shapes(backbone):
    net = build_irn(backbone, no_pretrained=True).eval()
    with torch.no_grad():
        edge, disp = net(torch.randn(2, 3, 50, 37))
    assert edge.shape == (2, 1, 13, 10) and disp.shape == (2, 2, 13, 10)  # ceil(size / 4)


def _pair_labels(index: PathIndex, side: int, batch: int):
    labels = np.zeros((side, side), np.uint8)
    labels[:, side // 2 :] = 1
    labels[0, 0] = 255
    return [torch.from_numpy(a)[None].expand(batch, -1, -1).contiguous() for a in index.affinity_labels(labels)]


def test_irn_loss_trains_only_the_branches(tiny_irn):
    index = PathIndex(5)
    tiny_irn.train()
    assert not tiny_irn.backbone.training  # frozen backbone stays in eval mode
    edge, disp = tiny_irn(torch.randn(2, 3, 64, 64))
    losses = irn_losses(edge, disp, *_pair_labels(index, 16, 2), index)
    assert set(losses) == {"loss", "pos_aff", "neg_aff", "dp_fg", "dp_bg"}
    assert all(torch.isfinite(v) for v in losses.values())
    tiny_irn.zero_grad()
    losses["loss"].backward()
    assert all(p.grad is None for p in tiny_irn.backbone.parameters())
    assert all(p.grad is not None for p in tiny_irn.edge_layers.parameters())
    assert all(p.grad is not None for p in tiny_irn.dp_layers.parameters())


def test_irn_affinity_losses_by_hand():
    index = PathIndex(2)
    bg_pos, fg_pos, neg = _pair_labels(index, 6, 1)
    disp = torch.zeros(1, 2, 6, 6)
    no_edges = irn_losses(torch.full((1, 1, 6, 6), -30.0), disp, bg_pos, fg_pos, neg, index)
    assert float(no_edges["pos_aff"]) < 1e-4  # affinity ~1 everywhere: positives are free ...
    assert float(no_edges["neg_aff"]) > 9.0  # ... and negatives cost ~ -log(1e-5)
    all_edges = irn_losses(torch.full((1, 1, 6, 6), 30.0), disp, bg_pos, fg_pos, neg, index)
    assert float(all_edges["neg_aff"]) < 1e-4 and float(all_edges["pos_aff"]) > 9.0
    # zero displacement: background pairs are right; foreground pairs miss |dy| + |dx| per pair
    assert float(no_edges["dp_bg"]) == 0.0
    assert float(no_edges["dp_fg"]) > 0.0


def test_edge_probabilities_use_the_flip(tiny_irn):
    tiny_irn.eval()
    image = torch.randn(3, 30, 45)
    edge = tiny_irn.edge_probabilities(image)
    assert edge.shape == (8, 12) and float(edge.min()) >= 0 and float(edge.max()) <= 1
    mirrored = tiny_irn.edge_probabilities(image.flip(-1))
    torch.testing.assert_close(mirrored, edge.flip(-1), atol=1e-5, rtol=0)  # flip-averaged: symmetric
    assert tiny_irn.edge_probabilities(image, pad_to=64).shape == (8, 12)


def test_displacement_mean_shift(tiny_irn):
    tiny_irn.train()
    before = tiny_irn.displacement_mean.clone()
    _, disp = tiny_irn(torch.randn(2, 3, 32, 32))
    assert not torch.equal(tiny_irn.displacement_mean, before)
    tiny_irn.eval()
    with torch.no_grad():
        _, shifted = tiny_irn(torch.randn(1, 3, 32, 32))
    assert shifted.shape == (1, 2, 8, 8)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50", "resnet101"])
def test_deeplab_shapes_all_backbones(backbone):
    net = build_deeplabv3(3, backbone, no_pretrained=True).eval()
    with torch.no_grad():
        logits = net(torch.randn(1, 3, 41, 57))
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 4, 41, 57)


def test_deeplab_loads_torchvision_backbone_files(tmp_path):
    reference = torchvision.models.mobilenet_v2(weights=None)
    path = tmp_path / "mnv2.pth"
    torch.save(reference.state_dict(), path)
    net = build_deeplabv3(2, "mobilenet_v2", pretrained=path)
    torch.testing.assert_close(net.backbone["3"].conv[0][0].weight, reference.features[3].conv[0][0].weight)
    # output stride 16: the 160-channel stage keeps its resolution, with dilation instead
    assert net.backbone["14"].conv[1][0].stride == (1, 1) and net.backbone["15"].conv[1][0].dilation == (2, 2)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    build_deeplabv3(2, "resnet50", pretrained=tmp_path / "r50.pth")
    with pytest.raises(UserError, match="does not match a torchvision resnet101"):
        build_deeplabv3(2, "resnet101", pretrained=tmp_path / "r50.pth")
    with pytest.raises(UserError, match="not found"):
        build_deeplabv3(2, "resnet50", pretrained=tmp_path / "missing.pth")


def test_deeplab_without_weights_says_how(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    with pytest.raises(UserError, match="seg.pretrained=PATH .* seg.no_pretrained=true"):
        build_deeplabv3(2, "mobilenet_v2")


def test_deeplab_frozen_backbone_bn():
    net = build_deeplabv3(2, "mobilenet_v2", no_pretrained=True, freeze_backbone_bn=True).train()
    norms = [m for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert not any(p.requires_grad for m in norms for p in m.parameters())
    assert net.classifier.training
    plain = build_deeplabv3(2, "mobilenet_v2", no_pretrained=True)
    assert set(plain.state_dict()) == set(net.state_dict())  # the same checkpoint format either way


@pytest.mark.shared_data
def test_deeplab_real_mobilenet_weights(mobilenet_weights):
    net = build_deeplabv3(16, "mobilenet_v2", pretrained=mobilenet_weights, freeze_backbone_bn=True).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 17, 64, 64)
