"""The authors' SIPE/AE-SIPE checkpoint importer, on a synthetic state_dict with their key names."""
from __future__ import annotations

import re

import pytest
import torch
from typer.testing import CliRunner

from aesipe.models.aesipe_net import AESIPENet
from aesipe.train import checkpointing as ckpt_io
from aesipe.train.cli import app

# Our key -> every name the authors' Net gives the same tensor (resnet50.*, stageN.0.*, backbone.N.*).
_BACKBONE_ALIASES = [
    (r"^backbone\.stages\.0\.0\.", ["resnet50.conv1.", "stage0.0.", "backbone.0.0."]),
    (r"^backbone\.stages\.0\.1\.", ["resnet50.bn1.", "stage0.1.", "backbone.0.1."]),
    (r"^backbone\.stages\.0\.4\.", ["resnet50.layer1.", "stage1.0.", "backbone.1.0."]),
    (r"^backbone\.stages\.1\.", ["resnet50.layer2.", "stage2.0.", "backbone.2.0."]),
    (r"^backbone\.stages\.2\.", ["resnet50.layer3.", "stage3.0.", "backbone.3.0."]),
    (r"^backbone\.stages\.3\.", ["resnet50.layer4.", "stage4.0.", "backbone.4.0."]),
    (r"^side\.(\d)\.", None),
    (r"^classifier\.", ["classifier.", "newly_added.0."]),
]


def authors_state_dict(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What ``torch.save({'net': Net().state_dict()})`` of the authors' code holds, built from our tensors."""
    out = {}
    for key, value in ours.items():
        for pattern, prefixes in _BACKBONE_ALIASES:
            match = re.match(pattern, key)
            if not match:
                continue
            rest = key[match.end():]
            if prefixes is None:  # side.i -> side{i+1} and newly_added.{i+1}
                i = int(match.group(1))
                prefixes = [f"side{i + 1}.", f"newly_added.{i + 1}."]
            for prefix in prefixes:
                out[prefix + rest] = value.clone()
            if rest.endswith("running_var"):
                for prefix in prefixes:
                    out[prefix + rest.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
            break
        else:
            raise AssertionError(f"test mapping misses {key}")
    return out


@pytest.fixture(scope="module")
def reference_net():
    torch.manual_seed(0)
    return AESIPENet(3, "resnet50", no_pretrained=True)


def test_import_maps_every_alias_and_reports_leftovers(tmp_path, reference_net, synth_root):
    theirs = authors_state_dict(reference_net.state_dict())
    theirs["module_only_in_their_code.weight"] = torch.zeros(2)
    source = tmp_path / "final.pth"
    torch.save({"net": theirs}, source)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["import-checkpoint", str(source), str(run), f"data.root={synth_root}",
                                      "data.cam_split=val", "model.backbone=mobilenet_v2"])
    assert result.exit_code == 0, result.output
    assert "backbone resnet50, 3 foreground classes" in result.output
    assert "1 keys of the file were not used: module_only_in_their_code.weight" in result.output
    ckpt = ckpt_io.load_checkpoint(run / "stage1/final.pt", kind="aesipe")
    assert ckpt["config"]["model"]["backbone"] == "resnet50"  # taken from the file, not the override
    assert ckpt["class_names"][0] == "background" and len(ckpt["class_names"]) == 4
    ours = reference_net.state_dict()
    assert ckpt["model"].keys() == ours.keys() and all(torch.equal(ckpt["model"][k], ours[k]) for k in ours)


def test_import_fails_clearly_on_conflicts_and_missing_keys(tmp_path, reference_net, synth_root):
    runner = CliRunner()
    theirs = authors_state_dict(reference_net.state_dict())
    theirs["stage4.0.0.conv1.weight"] = theirs["stage4.0.0.conv1.weight"] + 1  # alias disagrees
    torch.save({"net": theirs}, tmp_path / "conflict.pth")
    result = runner.invoke(app, ["import-checkpoint", str(tmp_path / "conflict.pth"), str(tmp_path / "r1"),
                                 f"data.root={synth_root}"])
    assert result.exit_code == 1 and "two different tensors for backbone.stages.3.0.conv1.weight" in result.output

    theirs = {k: v for k, v in authors_state_dict(reference_net.state_dict()).items() if not k.endswith("side3.weight")
              and k != "newly_added.3.weight"}
    torch.save({"net": theirs}, tmp_path / "partial.pth")
    result = runner.invoke(app, ["import-checkpoint", str(tmp_path / "partial.pth"), str(tmp_path / "r2"),
                                 f"data.root={synth_root}"])
    assert result.exit_code == 1 and "keys of the network are missing: side.2.weight" in result.output
    assert "Traceback" not in result.output
