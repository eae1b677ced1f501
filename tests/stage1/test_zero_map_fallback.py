"""A tagged class never gets an all-zero map: when every logit of the class is negative (so its CAM, seed,
prototype, IS-CAM and AE-IS-CAM are all zero), its CAM before the ReLU stands in, and make-cam, eval-cam and
the exported pseudo-labeller say so. The constructed case: a classifier row made negative."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from aesipe.constants import IMAGENET_MEAN, IMAGENET_STD
from aesipe.models.aesipe_net import build_aesipe
from aesipe.models.pseudo_maps import CamSettings, fused_maps, with_zero_map_fallback

NEGATIVE_CLASS = 2  # label value; classifier row NEGATIVE_CLASS - 1


def _silence(net: torch.nn.Module) -> None:
    """Every logit of NEGATIVE_CLASS <= 0: the last-stage features are >= 0 (ReLU6), the row is < 0; class 1's
    row > 0, so its map is not zero (random init could make it so)."""
    with torch.no_grad():
        row = net.classifier.weight[NEGATIVE_CLASS - 1]
        row.copy_(-row.abs() - 0.01)
        net.classifier.weight[0].copy_(net.classifier.weight[0].abs() + 0.01)


def test_only_zero_tagged_foreground_channels_are_replaced():
    maps = torch.zeros(1, 4, 2, 3)
    maps[0, 0] = 0.5  # background
    maps[0, 1] = torch.tensor([[0.0, 1.0, 0.2], [0.0, 0.0, 0.0]])  # a real map
    fallback = torch.rand(1, 4, 2, 3) + 0.1
    keep = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 4, 1, 1)  # channel 2 tagged and zero; 3 untagged
    out, fell_back = with_zero_map_fallback(maps, fallback, keep)
    assert fell_back.tolist() == [[False, False, True, False]]
    assert torch.equal(out[0, 2], fallback[0, 2])
    assert torch.equal(out[:, [0, 1, 3]], maps[:, [0, 1, 3]])


def test_network_with_a_negative_class_falls_back_to_its_prerelu_map(make_cfg, tmp_path):
    cfg = make_cfg(tmp_path / "run")
    torch.manual_seed(0)
    net = build_aesipe(cfg, 3, backbone_weights=False).eval()
    _silence(net)
    image = torch.rand(1, 3, 48, 64)
    tags = torch.tensor([[1.0, 1.0, 0.0]])
    keys = ("cam", "iscam", "aeiscam")
    off = CamSettings(scales=(1.0, 0.5), flip=True, pamr_backend="reference", zero_map_fallback=False)
    on = dataclasses.replace(off, zero_map_fallback=True)
    with torch.no_grad():
        plain, none = fused_maps(net, image, tags, keys, off, IMAGENET_MEAN, IMAGENET_STD)
        fixed, fell_back = fused_maps(net, image, tags, keys, on, IMAGENET_MEAN, IMAGENET_STD)
    for key in keys:
        assert float(plain[key][0, NEGATIVE_CLASS].abs().max()) == 0.0, key  # the impossible label
        assert not none[key].any()
        flags = fell_back[key][0]
        assert flags[NEGATIVE_CLASS] and not flags[0] and not flags[3], key  # never background or untagged
        for channel in range(4):
            if flags[channel]:  # a zero map made possible again
                assert float(plain[key][0, channel].abs().max()) == 0 < float(fixed[key][0, channel].max())
            else:  # the rest untouched
                assert torch.equal(fixed[key][0, channel], plain[key][0, channel]), (key, channel)


def test_make_cam_and_eval_cam_report_the_fallback(make_cfg, tmp_path):
    from aesipe.data import open_dataset
    from aesipe.train import checkpointing as ckpt_io
    from aesipe.train.stages.evaluate import cam_dir, describe, evaluate_cams
    from aesipe.train.stages.make_cam import make_cams
    from aesipe.train.stages.stage1 import final_checkpoint_path, train_stage1

    cfg = make_cfg(tmp_path / "run", **{"train.max_steps": 1})
    path = train_stage1(cfg)
    state = ckpt_io.load_checkpoint(path, kind="aesipe")
    row = state["model"]["classifier.weight"][NEGATIVE_CLASS - 1]
    row.copy_(-row.abs() - 0.01)
    ckpt_io.save_checkpoint(final_checkpoint_path(cfg), state)
    make_cams(cfg, "val", progress=False)
    ds = open_dataset(cfg.data, "val")
    tagged = [i for i in ds.ids if ds.labels(i)[NEGATIVE_CLASS - 1]]
    if not tagged:
        pytest.skip("no val image of the synthetic set is tagged with the class")
    with np.load(cam_dir(cfg, "val") / f"{tagged[0]}.npz") as data:
        classes = data["classes"].tolist()
        assert data["fallback_maps"][classes.index(NEGATIVE_CLASS)] and data["fallback_cam"].any()
        assert float(data["maps"][classes.index(NEGATIVE_CLASS)].max()) > 0
    result = evaluate_cams(cfg, "val", "maps", [1.0], progress=False)
    counted = result["zero_map_fallback"]
    # An untrained network can leave other classes without seeds too: every such image is counted.
    flagged = [i for i in ds.ids if np.load(cam_dir(cfg, "val") / f"{i}.npz")["fallback_maps"].any()]
    assert counted["classes"][ds.class_names[NEGATIVE_CLASS]] == len(tagged) and counted["images"] == len(flagged)
    assert f"{len(flagged)} image(s) had a tagged class with an all-zero map" in describe(result)
