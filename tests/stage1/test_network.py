"""Backbones and the AE-SIPE network: shapes, freezing, masking, the Table-3 step programs."""
from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from aesipe.models import sipe_modules as sm
from aesipe.models.aesipe_net import AE_PROGRAMS, AESIPENet
from aesipe.models.backbones import build_backbone
from aesipe.utils.errors import UserError

# The module, not the function aesipe.ops re-exports under the same name.
pamr_module = importlib.import_module("aesipe.ops.pamr")


@pytest.mark.parametrize("name, channels", [("resnet50", (256, 512, 1024, 2048)), ("mobilenet_v2", (24, 32, 96, 1280))])
def test_backbone_stages_strides_and_freezing(name, channels):
    torch.manual_seed(0)
    backbone = build_backbone(name, no_pretrained=True)
    outs = backbone(torch.randn(1, 3, 64, 64))
    assert tuple(o.shape[1] for o in outs) == channels
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 4]  # strides 4, 8, 16, 16
    assert not outs[1].requires_grad and outs[3].requires_grad  # stages 0-1 detached, 2-3 train
    frozen = [p.requires_grad for p in backbone.stages[:2].parameters()]
    assert frozen and not any(frozen)
    assert all(p.requires_grad for p in backbone.stages[2:].parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())  # frozen BN only
    backbone.train()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(backbone(x)[3], backbone.eval()(x)[3])  # train mode does not use batch statistics


def test_resnet101_builds_with_its_depth():
    backbone = build_backbone("resnet101", no_pretrained=True)
    assert len(backbone.stages[2]) == 23


def test_weights_loading_is_strict_and_errors_are_one_line(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError, match="model.pretrained=PATH .* model.no_pretrained=true"):
        build_backbone("mobilenet_v2")
    state = torchvision.models.mobilenet_v2().state_dict()
    good = tmp_path / "good.pth"
    torch.save(state, good)
    backbone = build_backbone("mobilenet_v2", pretrained=good)
    ours = backbone.state_dict()
    assert torch.equal(ours["stages.3.18.0.weight"], state["features.18.0.weight"])
    assert torch.equal(ours["stages.0.0.0.weight"], state["features.0.0.weight"])
    state.pop("features.3.conv.1.0.weight")
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(UserError, match="1 missing"):
        build_backbone("mobilenet_v2", pretrained=bad)
    with pytest.raises(UserError, match="not found"):
        build_backbone("mobilenet_v2", pretrained=tmp_path / "absent.pth")


def test_weights_found_in_hub_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    state = torchvision.models.mobilenet_v2().state_dict()
    torch.save(state, tmp_path / "checkpoints" / "mobilenet_v2-b0353104.pth")
    backbone = build_backbone("mobilenet_v2")
    assert torch.equal(backbone.state_dict()["stages.2.7.conv.0.0.weight"], state["features.7.conv.0.0.weight"])


@pytest.mark.shared_data
def test_real_mobilenet_weights_match_torchvision(mobilenet_weights):
    import torchvision

    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(mobilenet_weights, weights_only=True))
    reference.eval()
    backbone = build_backbone("mobilenet_v2", pretrained=mobilenet_weights, output_stride=32)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone(x)[3], reference.features(x), atol=1e-5)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return AESIPENet(3, "mobilenet_v2", no_pretrained=True, pamr_backend="reference")


def test_training_maps_are_masked_by_tags_and_crop(net):
    image = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    valid = torch.ones(2, 64, 64)
    valid[:, :, 48:] = 0  # right quarter is padding: the last stride-16 column
    out = net(image, labels, valid)
    assert out["score"].shape == (2, 3)
    for key in ("cam", "iscam", "aeiscam", "final"):
        assert out[key].shape == (2, 4, 4, 4)
        assert out[key][0, 2].abs().max() == 0 and out[key][1, 1].abs().max() == 0, key  # absent classes
    # The CAM is zero in the padding; the IS-CAMs are not masked there (as the authors' code): their
    # seeds are, so padding never shapes a prototype.
    assert out["cam"][:, :, :, 3].abs().max() == 0
    assert out["iscam"][:, 0, :, 3].abs().max() > 0
    # Background of the CAM = 1 - max over *all* foreground channels, before tag masking.
    logits = net.classifier(net._features(image)[0])
    expected_bg = sm.cam_with_background(logits)[:, 0, :, :3]
    assert torch.allclose(out["cam"][:, 0, :, :3], expected_bg)


def test_gradient_reaches_trainable_layers_only(net):
    net.zero_grad()
    out = net(torch.randn(1, 3, 64, 64), torch.tensor([[1.0, 1.0, 0.0]]))
    loss = F.multilabel_soft_margin_loss(out["score"], torch.tensor([[1.0, 1.0, 0.0]])) + sm.gsc_loss(out["cam"], out["final"])
    loss.backward()
    assert net.classifier.weight.grad is not None and net.side[0].weight.grad is not None
    assert net.backbone.stages[3][-1][0].weight.grad is not None
    assert all(p.grad is None for p in net.backbone.stages[:2].parameters())
    backbone, new = net.parameter_groups()
    assert len(new) == 5 and all(p.requires_grad for p in backbone)


def _manual_pipeline(net, image, program, labels):
    """The Table-3 programs written out by hand with the building blocks."""
    last, hie = net._features(image)
    mask = torch.cat([torch.ones(1, 1), labels], 1)[:, :, None, None]
    cam = sm.cam_with_background(net.classifier(last)) * mask
    current = sm.reactivate(sm.prototypes(sm.structure_seeds(cam, hie, mask), hie), hie)
    for step in program:
        if step == "pamr":
            current = net._refine_with_pamr(image, current, mask)
        else:
            current = sm.reactivate(sm.prototypes(sm.one_hot_argmax(current, mask), hie), hie)
    return sm.max_normalise(current)


@pytest.mark.parametrize("variant", sorted(AE_PROGRAMS))
def test_table3_variant_runs_its_step_sequence(variant, monkeypatch):
    calls = []

    def fake_pamr(image, mask, num_iter, dilations, backend):
        calls.append((tuple(image.shape), mask.shape[1], num_iter))
        up = F.interpolate(mask, size=image.shape[-2:], mode="bilinear", align_corners=True)
        return up.roll(1, dims=-1)  # a visible change, so skipping the step would be noticed

    monkeypatch.setattr(pamr_module, "pamr", fake_pamr)  # what pamr_kept_channels calls
    torch.manual_seed(1)
    net = AESIPENet(3, "mobilenet_v2", no_pretrained=True, ae_variant=variant, pamr_iters=7)
    image, labels = torch.randn(1, 3, 64, 64), torch.tensor([[1.0, 0.0, 1.0]])
    out = net(image, labels)
    expected_program = {"ae": ("pamr", "pr_is"), "extra_pr_is": ("pr_is",),
                        "pr_is_pamr_pr_is": ("pr_is", "pamr", "pr_is"),
                        "pamr_pr_is_pr_is": ("pamr", "pr_is", "pr_is")}[variant]
    assert net.program == expected_program
    # image at 1/4 size; background + the 2 tagged classes of 4 channels refined
    assert calls == [((1, 3, 16, 16), 3, 7)] * expected_program.count("pamr")
    calls.clear()
    assert torch.allclose(out["aeiscam"], _manual_pipeline(net, image, expected_program, labels), atol=1e-6)


def test_switches_select_maps_and_normalisation(monkeypatch):
    torch.manual_seed(2)
    sipe = AESIPENet(2, "mobilenet_v2", no_pretrained=True, affinity_enhancement=False, pamr_backend="reference",
                     iscam_normalisation=False, hierarchical_seeds=False)
    out = sipe(torch.randn(1, 3, 64, 64), torch.tensor([[1.0, 0.0]]))
    assert "aeiscam" not in out and torch.equal(out["final"], out["iscam"])
    assert out["iscam"].amax() <= 1.0 + 1e-6  # ReLU(cosine), not max-normalised
    # HF off: seeds come from the last-stage features, so they differ from seeds on hierarchical ones.
    seen = []
    monkeypatch.setattr(sm, "structure_seeds", lambda cam, f, m, s: seen.append(f.shape[1]) or torch.zeros_like(cam))
    sipe(torch.randn(1, 3, 64, 64), torch.tensor([[1.0, 0.0]]))
    sipe.maps(torch.randn(1, 3, 64, 64), torch.tensor([[1.0, 0.0]]))
    assert seen == [1280, 192]  # training: last stage; inference: hierarchical (as the authors' code)


def test_maps_flip_fusion_is_mirror_symmetric(net):
    net.eval()
    image = torch.randn(1, 3, 64, 80)
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    with torch.no_grad():
        a = net.maps(image, labels, flip=True)
        b = net.maps(image.flip(-1), labels, flip=True)
    assert set(a) == {"cam", "iscam", "aeiscam"}
    assert a["cam"].shape == (1, 4, 4, 5)
    assert torch.allclose(a["cam"], b["cam"].flip(-1), atol=1e-5)
