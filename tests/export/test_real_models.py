"""Export the real builders' networks (MobileNetV2 variants, random init) from documented checkpoint dicts."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from aesipe.config import RunConfig, to_dict
from aesipe.export import sources
from aesipe.export.api import export_model
from aesipe.infer import Labeler

CLASSES = ["background", "cat", "dog", "car"]


@pytest.fixture
def real_builders(tiny_builders, monkeypatch):
    from aesipe.export.sources import _build_aesipe, _build_deeplabv3

    monkeypatch.setitem(sources.BUILDERS, "deeplabv3", _build_deeplabv3)
    monkeypatch.setitem(sources.BUILDERS, "aesipe", _build_aesipe)


def _config() -> RunConfig:
    cfg = RunConfig()
    return dataclasses.replace(
        cfg, seg=dataclasses.replace(cfg.seg, backbone="mobilenet_v2", no_pretrained=True),
        model=dataclasses.replace(cfg.model, backbone="mobilenet_v2", no_pretrained=True, pamr_iters=3,
                                  pamr_dilations=(1, 2, 4)))


def _checkpoint(path, kind, net):
    torch.save({"format": "aesipe-checkpoint", "version": 1, "kind": kind, "model": net.state_dict(),
                "config": to_dict(_config()), "class_names": CLASSES}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_real_deeplabv3_mobilenet(real_builders, tmp_path, fmt):
    from aesipe.models.deeplab import build_deeplabv3

    torch.manual_seed(0)
    ckpt = _checkpoint(tmp_path / "seg.pt", "deeplabv3", build_deeplabv3(3, backbone="mobilenet_v2",
                                                                        no_pretrained=True))
    logs = []
    path = export_model(ckpt, tmp_path / f"seg_export.{fmt}", format=fmt, log=logs.append)
    assert any("label agreement 100.000%" in line for line in logs)
    labels = Labeler(path).label(np.zeros((37, 50, 3), dtype=np.uint8))
    assert labels.shape == (37, 50) and labels.max() < 4


@pytest.mark.slow
def test_real_aesipe_torchscript_records_the_fused_op(real_builders, tmp_path):
    from aesipe.models.aesipe_net import build_aesipe
    from aesipe.ops import _build

    if _build.load_library() is None:
        pytest.skip(f"the fused PAMR op is not built here ({_build.unavailable_reason()})")
    torch.manual_seed(0)
    ckpt = _checkpoint(tmp_path / "stage1.pt", "aesipe", build_aesipe(_config(), 3))
    path = export_model(ckpt, tmp_path / "pl.pt", format="torchscript", log=lambda m: None)
    labeler = Labeler(path)
    # The AE step's PAMR runs the compiled op while the graph is traced: the file says so.
    assert labeler.info.custom_ops == ("aesipe::pamr",) and labeler.info.op_library
    labels = labeler.label(np.full((40, 52, 3), 128, dtype=np.uint8), tags=["dog"])
    assert labels.shape == (40, 52) and set(np.unique(labels)) <= {0, 2}
