"""DeepLabV3 segmenters (stage 3): torchvision's DeepLabV3 classes, weights only from files.

- ResNet-101 / ResNet-50: torchvision's ``deeplabv3_resnet*`` layout (layer3/layer4 dilated, output
  stride 8, ASPP rates 12/24/36), so the state_dict keys equal torchvision's (``backbone.layer1...``,
  ``classifier.0...``).
- MobileNetV2: ``features[0:18]`` (320 channels, as the MobileNetV2 paper's DeepLabV3) at output stride 16:
  the stride-2 block ``features[14]`` becomes stride 1 and the depthwise convs from there on are dilated
  by 2, so the ImageNet ``mobilenet_v2`` state_dict loads unchanged; ASPP rates 6/12/18 (DeepLabV3 at
  output stride 16).

``forward(x)`` returns the logits [B, 1 + C, H, W] at the input size (not torchvision's OrderedDict),
so the module exports to ONNX / TorchScript as it is. Nothing is ever downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

from aesipe.utils.errors import UserError

from .backbones import hub_cache_file, load_state_dict_file

BACKBONES = ("resnet101", "resnet50", "mobilenet_v2")
_MOBILENET_FEATURES = 18  # features[0:18]: the last inverted-residual block gives 320 channels
_MOBILENET_DILATED_FROM = 14  # the last stride-2 block


class DeepLabV3Segmenter(DeepLabV3):
    """torchvision's DeepLabV3 whose ``forward`` returns the upsampled logits tensor.

    ``freeze_backbone_bn``: backbone BatchNorm layers stay in eval mode with frozen affine parameters
    (for small batches and for weight files with folded BatchNorm); the state_dict is the same either way.
    """

    def __init__(self, backbone: nn.Module, classifier: nn.Module, freeze_backbone_bn: bool = False):
        super().__init__(backbone, classifier, aux_classifier=None)
        self.freeze_backbone_bn = freeze_backbone_bn
        if freeze_backbone_bn:
            for module in self._backbone_norms():
                for param in module.parameters():
                    param.requires_grad_(False)

    def _backbone_norms(self) -> list[nn.Module]:
        return [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> "DeepLabV3Segmenter":
        super().train(mode)
        if self.freeze_backbone_bn:
            for module in self._backbone_norms():
                module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        features = self.backbone(x)["out"]
        logits = self.classifier(features)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _resnet_backbone(name: str) -> nn.Module:
    net = getattr(torchvision.models, name)(weights=None, replace_stride_with_dilation=[False, True, True])
    return IntermediateLayerGetter(net, return_layers={"layer4": "out"})


def _mobilenet_backbone() -> nn.Module:
    features = torchvision.models.mobilenet_v2(weights=None).features[:_MOBILENET_FEATURES]
    for block in features[_MOBILENET_DILATED_FROM:]:
        for module in block.modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
                module.stride, module.dilation, module.padding = (1, 1), (2, 2), (2, 2)
    return IntermediateLayerGetter(features, return_layers={str(_MOBILENET_FEATURES - 1): "out"})


def _torchvision_keys(backbone: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ImageNet classification state_dict -> keys of our backbone module (the classifier dropped)."""
    out = {}
    for key, value in state_dict.items():
        if backbone == "mobilenet_v2":
            if not key.startswith("features."):
                continue
            rest = key[len("features."):]
            if int(rest.split(".", 1)[0]) >= _MOBILENET_FEATURES:
                continue
            out[rest] = value
        elif not key.startswith("fc."):
            out[key] = value
    return out


def load_backbone_weights(module: nn.Module, backbone: str, path: str | Path) -> None:
    """Load a torchvision ImageNet state_dict file into the segmenter's backbone (strict on the backbone)."""
    load_state_dict_file(module, path, lambda raw: _torchvision_keys(backbone, raw), backbone)


def build_deeplabv3(
    num_classes: int,
    backbone: str = "resnet101",
    pretrained: str | Path | None = None,
    no_pretrained: bool = False,
    freeze_backbone_bn: bool = False,
) -> DeepLabV3Segmenter:
    """DeepLabV3 for ``num_classes`` foreground classes (C, as ``SegmentationDataset.num_classes``):
    the logits have 1 + C channels, background first.

    Backbone ImageNet weights come from ``pretrained`` (a torchvision state_dict file), else from the
    torch hub cache when it holds torchvision's file; ``no_pretrained=True`` keeps random init.
    """
    if backbone not in BACKBONES:
        raise UserError(f"unknown segmenter backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if num_classes < 1:
        raise ValueError(f"num_classes (foreground) must be at least 1, got {num_classes}")
    if backbone == "mobilenet_v2":
        body, channels, rates = _mobilenet_backbone(), 320, (6, 12, 18)
    else:
        body, channels, rates = _resnet_backbone(backbone), 2048, (12, 24, 36)
    if not no_pretrained:
        path = Path(pretrained) if pretrained else hub_cache_file(backbone)
        if path is None:
            raise UserError(
                f"no ImageNet weights for the {backbone} segmenter: pass seg.pretrained=PATH "
                "(a torchvision state_dict) or seg.no_pretrained=true to start from random init"
            )
        load_backbone_weights(body, backbone, path)
    head = DeepLabHead(channels, 1 + num_classes, atrous_rates=rates)
    return DeepLabV3Segmenter(body, head, freeze_backbone_bn=freeze_backbone_bn)
