"""The exported graphs: normalise -> network -> resize to the input -> (PAMR) -> scores and labels.

Both graphs take ``image``: float32 RGB in [0, 1], NCHW, any batch/height/width (the caller pads to a
multiple of the size divisor with the mean colour, i.e. zero after normalisation, as in training).
Normalising inside the graph means every client only divides by 255; the constants travel in the file.

Outputs (both graphs):

* ``scores`` float32 [B, 1+C, H, W] at the input size (segmenter: logits; pseudo-labeller: maps
  divided by their per-channel max, absent classes zeroed, background *not* yet scaled), for test-time
  augmentation and CRF;
* ``labels`` uint8 [B, H, W]: the argmax (pseudo-labeller: after multiplying the background channel by
  ``background_scale``). Fetching only ``labels`` skips copying the big score tensor back.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAMR_DOWNSCALE = 4
"""PAMR runs on the image at 1/4 of the input size (the input is padded to a multiple of 16, so never empty), as in the PAMR paper and AE-SIPE's AE step: at
full size its memory grows as K x 8 x len(dilations) x H x W; its result is resized to the input."""
MAX_NORM_EPS = 1e-5


@dataclass(frozen=True)
class PamrSettings:
    num_iter: int = 10
    dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)
    backend: str = "auto"
    downscale: int = PAMR_DOWNSCALE

    def describe(self) -> dict:
        return {"num_iter": self.num_iter, "dilations": list(self.dilations), "downscale": self.downscale,
                "image": "the [0, 1] input resized to (H // downscale, W // downscale), bilinear",
                "then": "maps resized to the input size, bilinear"}


class _Normalise(nn.Module):
    def __init__(self, mean, std, half: bool):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.half_precision = half

    def forward(self, image01: torch.Tensor) -> torch.Tensor:
        x = (image01 - self.mean) / self.std
        return x.half() if self.half_precision else x


def _output_matches_input(net: nn.Module) -> bool:
    """Does the network already return logits at the input size (torchvision DeepLabV3 does)?"""
    probe = torch.zeros(1, 3, 40, 56)
    param = next(net.parameters(), None)
    if param is not None:
        probe = probe.to(device=param.device, dtype=param.dtype)
    with torch.no_grad():
        out = _logits(net(probe))
    return tuple(out.shape[-2:]) == (40, 56)


def _logits(out) -> torch.Tensor:
    return out["out"] if isinstance(out, dict) else out


class SegmenterGraph(nn.Module):
    """DeepLabV3 (or any ``[B,3,H,W] -> [B,1+C,h,w]`` segmenter) as a self-contained graph."""

    def __init__(self, net: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD, half: bool = False):
        super().__init__()
        self.normalise = _Normalise(mean, std, half)
        self.net = net.half() if half else net
        # Decided once here rather than by a shape test in forward, which would not export.
        self.resize_output = not _output_matches_input(self.net)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = _logits(self.net(self.normalise(image)))
        if self.resize_output:
            logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        scores = logits.float()
        return scores, scores.argmax(dim=1).to(torch.uint8)


class PseudoLabellerGraph(nn.Module):
    """AE-SIPE stage 1 + tags -> pseudo-label scores (METHOD.md "Making pseudo-labels", one scale).

    ``tags`` is the image's multi-hot float [B, C] (foreground only); background is always kept.
    """

    def __init__(self, net: nn.Module, which_map: str, background_scale: float, pamr: PamrSettings | None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, half: bool = False):
        super().__init__()
        self.normalise = _Normalise(mean, std, half)
        self.net = net.half() if half else net
        self.which_map = which_map
        self.pamr = pamr
        self.register_buffer("background_weight", torch.tensor([float(background_scale)]))

    def forward(self, image: torch.Tensor, tags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = image.shape[-2:]
        x = self.normalise(image)
        tags = tags.to(x.dtype)
        maps = self.net.maps(x, tags)[self.which_map].float()
        keep = torch.cat([torch.ones_like(tags[:, :1]), tags], dim=1).float()[:, :, None, None]
        maps = maps * keep
        if self.pamr is not None:
            from aesipe.ops.pamr import pamr

            size = (height // self.pamr.downscale, width // self.pamr.downscale)
            small = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False)
            maps = pamr(small, maps, self.pamr.num_iter, self.pamr.dilations, self.pamr.backend) * keep
        scores = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
        scores = scores / (scores.amax(dim=(2, 3), keepdim=True) + MAX_NORM_EPS)
        weight = torch.cat([self.background_weight, torch.ones_like(scores[0, 1:, 0, 0])])
        labels = (scores * weight[None, :, None, None]).argmax(dim=1).to(torch.uint8)
        return scores, labels
