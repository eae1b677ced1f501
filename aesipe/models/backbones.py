"""Backbones shared by every network: torchvision architectures split into four stages.

``build_backbone(name, ...)`` returns a ``Backbone`` whose ``forward`` gives the four stage outputs.

- ResNet-50/101: stages = (stem + layer1, layer2, layer3, layer4) -> (256, 512, 1024, 2048) channels at
  strides (4, 8, 16, 16) with ``output_stride=16`` (layer4 stride 1, no dilation: the SIPE/AE-SIPE setting;
  torchvision v1.5 blocks put the stride on conv2, as the authors' ResNet does).
- MobileNetV2: stages = (features[0:4], [4:7], [7:14], [14:19]) -> (24, 32, 96, 1280) channels at strides
  (4, 8, 16, 16) with ``output_stride=16`` (the stride-2 block ``features[14]`` set to stride 1).

BatchNorm statistics are frozen by default (``bn="frozen_stats"``: the ImageNet running statistics are kept,
``train()`` cannot switch to batch statistics, and the scale/shift train where the stage trains -- the
authors' behaviour). ``bn="frozen"`` also freezes the scale/shift (torchvision's ``FrozenBatchNorm2d``: all
four are buffers); ``bn="train"`` is a plain ``BatchNorm2d`` (a random-init network needs its statistics
learnt). The first two store the same state_dict keys, so checkpoints load across them. Stages before
``trainable_from`` (0-based) have ``requires_grad=False`` and their output is detached, so no gradient is
computed through them (SIPE: stem + layer1 + layer2 frozen, i.e. ``trainable_from=2``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from aesipe.checkpoint_format import load_torch_file
from aesipe.utils.errors import UserError

BackboneName = Literal["resnet50", "resnet101", "mobilenet_v2"]
STAGE_CHANNELS = {
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
    "mobilenet_v2": (24, 32, 96, 1280),
}
# torchvision's ImageNet weights; only their file names are used, to find them in the torch hub cache.
_TORCHVISION_WEIGHTS = {
    "resnet50": ("ResNet50_Weights", ("IMAGENET1K_V1", "IMAGENET1K_V2")),
    "resnet101": ("ResNet101_Weights", ("IMAGENET1K_V1", "IMAGENET1K_V2")),
    "mobilenet_v2": ("MobileNet_V2_Weights", ("IMAGENET1K_V1", "IMAGENET1K_V2")),
}
_HEAD_PREFIXES = ("fc.", "classifier.")
BatchNormMode = Literal["frozen_stats", "frozen", "train"]


class FrozenStatsBatchNorm2d(FrozenBatchNorm2d):
    """BatchNorm with frozen running statistics and a trainable scale/shift.

    The authors keep BatchNorm in eval mode (ImageNet statistics) while the BatchNorm weights of the
    trainable stages stay parameters of the backbone group. Subclassing ``FrozenBatchNorm2d`` keeps its
    forward (running statistics only) and its state_dict keys; only weight and bias become parameters.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__(num_features, eps)
        weight, bias = self.weight, self.bias
        del self.weight, self.bias  # buffers in the parent class
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)


_NORM_LAYERS = {"frozen_stats": FrozenStatsBatchNorm2d, "frozen": FrozenBatchNorm2d, "train": nn.BatchNorm2d}


class Backbone(nn.Module):
    def __init__(self, name: str, stages: list[nn.Module], trainable_from: int):
        super().__init__()
        self.name = name
        self.stages = nn.ModuleList(stages)
        self.channels = STAGE_CHANNELS[name]
        self.trainable_from = trainable_from
        for index, stage in enumerate(self.stages):
            for param in stage.parameters():
                param.requires_grad_(index >= trainable_from)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index < self.trainable_from:
                x = x.detach()  # frozen stage: nothing upstream needs a gradient
            outputs.append(x)
        return outputs


def _resnet(name: str, output_stride: int, dilated: bool, norm_layer) -> list[nn.Module]:
    if dilated:
        if output_stride not in (8, 16, 32):
            raise ValueError(f"dilated ResNet supports output_stride 8, 16 or 32, not {output_stride}")
        replace = [False, output_stride == 8, output_stride <= 16]
    else:
        if output_stride not in (16, 32):
            raise ValueError(f"ResNet without dilation supports output_stride 16 or 32, not {output_stride}")
        replace = [False, False, False]
    net = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer, replace_stride_with_dilation=replace)
    if not dilated and output_stride == 16:
        first = net.layer4[0]
        first.conv2.stride = (1, 1)
        first.downsample[0].stride = (1, 1)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    # Sub-module names keep torchvision's keys: stages.0.0 = conv1, stages.0.4 = layer1, stages.1 = layer2 ...
    return [nn.Sequential(*stem, net.layer1), net.layer2, net.layer3, net.layer4]


def _mobilenet_v2(output_stride: int, norm_layer) -> list[nn.Module]:
    if output_stride not in (16, 32):
        raise ValueError(f"MobileNetV2 supports output_stride 16 or 32, not {output_stride}")
    features = torchvision.models.mobilenet_v2(weights=None, norm_layer=norm_layer).features
    if output_stride == 16:
        features[14].conv[1][0].stride = (1, 1)  # the depthwise conv of the last stride-2 block
    return [features[0:4], features[4:7], features[7:14], features[14:19]]


def _stage_key_map(name: str) -> dict[str, str]:
    """torchvision state_dict prefix -> our prefix."""
    if name == "mobilenet_v2":
        bounds = [(0, 4), (4, 7), (7, 14), (14, 19)]
        # Slicing an nn.Sequential keeps the original child names, so features.9 -> stages.2.9.
        return {f"features.{i}.": f"stages.{s}.{i}." for s, (lo, hi) in enumerate(bounds) for i in range(lo, hi)}
    stem = {"conv1.": "stages.0.0.", "bn1.": "stages.0.1.", "layer1.": "stages.0.4."}
    return {**stem, "layer2.": "stages.1.", "layer3.": "stages.2.", "layer4.": "stages.3."}


def torchvision_to_backbone_keys(name: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision classification state_dict to ``Backbone`` keys (the ImageNet head dropped)."""
    mapping = _stage_key_map(name)
    out = {}
    for key, value in state_dict.items():
        if key.startswith(_HEAD_PREFIXES):
            continue
        prefix = next((p for p in mapping if key.startswith(p)), None)
        out[mapping[prefix] + key[len(prefix):] if prefix else key] = value
    return out


def hub_cache_file(name: str) -> Path | None:
    """The standard torchvision ImageNet file for ``name`` if the torch hub cache already has it."""
    enum_name, members = _TORCHVISION_WEIGHTS[name]
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for member in members:
        url = getattr(getattr(torchvision.models, enum_name), member).url
        candidate = folder / url.rsplit("/", 1)[-1]
        if candidate.is_file():
            return candidate
    return None


def load_state_dict_file(module: nn.Module, path: str | Path, to_module_keys, what: str) -> None:
    """Load a torchvision ImageNet state_dict file into ``module``, strictly.

    ``to_module_keys(state_dict) -> state_dict`` maps torchvision's names to the module's (dropping the
    ImageNet head). Every module key must be filled and every kept file key used; BatchNorm's
    ``num_batches_tracked`` counters may be absent. Problems end as one ``UserError`` line."""
    raw = load_torch_file(path, "pretrained weights")
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict):
        raise UserError(f"{path} does not hold a state_dict")
    result = module.load_state_dict(to_module_keys(raw), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {result.unexpected_keys[:3]}"
        raise UserError(
            f"{path} does not match a torchvision {what}: {len(missing)} missing, "
            f"{len(result.unexpected_keys)} unexpected keys ({detail})"
        )


def load_imagenet_weights(backbone: Backbone, path: str | Path) -> None:
    """Load a torchvision ImageNet state_dict with strict key checking (the ImageNet head is ignored)."""
    load_state_dict_file(backbone, path, lambda raw: torchvision_to_backbone_keys(backbone.name, raw), backbone.name)


def build_backbone(
    name: str,
    pretrained: str | Path | None = None,
    no_pretrained: bool = False,
    output_stride: int = 16,
    trainable_from: int = 2,
    bn: BatchNormMode = "frozen",
    dilated: bool = False,
) -> Backbone:
    """A four-stage backbone with ImageNet weights from ``pretrained``, else the torch hub cache.

    ``no_pretrained=True`` keeps random init (tests, synthetic data). Neither weights nor that flag is a
    ``UserError`` naming both fixes: nothing is ever downloaded.
    """
    if name not in STAGE_CHANNELS:
        raise UserError(f"unknown backbone {name!r}; choose one of {', '.join(STAGE_CHANNELS)}")
    if not 0 <= trainable_from <= 4:
        raise ValueError(f"trainable_from must be in 0..4 (4 = nothing trains), got {trainable_from}")
    if bn not in _NORM_LAYERS:
        raise ValueError(f"bn must be one of {', '.join(_NORM_LAYERS)}, got {bn!r}")
    norm_layer = _NORM_LAYERS[bn]
    if name == "mobilenet_v2":
        if dilated:
            raise ValueError("MobileNetV2 backbone has no dilated variant")
        stages = _mobilenet_v2(output_stride, norm_layer)
    else:
        stages = _resnet(name, output_stride, dilated, norm_layer)
    backbone = Backbone(name, stages, trainable_from)
    if no_pretrained:
        return backbone
    path = Path(pretrained) if pretrained else hub_cache_file(name)
    if path is None:
        raise UserError(
            f"no ImageNet weights for {name}: pass model.pretrained=PATH (a torchvision state_dict) "
            "or model.no_pretrained=true to start from random init"
        )
    load_imagenet_weights(backbone, path)
    return backbone
