"""The exported graphs: normalise -> network -> scores at the input size -> labels.

Both graphs take ``image``: float32 RGB in [0, 1], NCHW, any batch/height/width. Normalising inside the
graph means every client only divides by 255; the constants travel in the file.

* ``SegmenterGraph``: ``scores`` = logits [B, 1+C, H, W] at the input size (the caller pads the input to a
  multiple of the size divisor with the mean colour, i.e. zero after normalisation, as in training);
  ``labels`` = their argmax.
* ``PseudoLabellerGraph`` (second input ``tags``, multi-hot [B, C]): ``scores`` = the summed maps of
  ``aesipe.models.pseudo_maps.fused_maps`` -- the run's test-time scales, flip and PAMR setting, exactly as
  ``make-cam`` makes them -- *before* the per-channel max normalisation; ``labels`` = the pseudo-label rule
  of ``aesipe.pseudo_labels`` (normalise, background x ``background_scale``, argmax), mirrored here in
  torch. Inputs are not padded: the maps of a padded image would differ from make-cam's.

  Third output ``fallback`` (``fallback_output``; the ONNX export has it, the TorchScript one not yet because
  aesipe-label's TorchScript backend unpacks two outputs): uint8 [B, 1+C], 1 for a tagged class whose map
  was zero everywhere and was replaced by its pre-ReLU CAM (``cam.zero_map_fallback``).

``labels`` is uint8 [B, H, W]; fetching only it skips copying the big score tensor back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aesipe.constants import IMAGENET_MEAN, IMAGENET_STD
from aesipe.models.pseudo_maps import CamSettings, fused_maps
from aesipe.pseudo_labels import MAX_NORM_EPS


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
    """AE-SIPE stage 1 + tags -> the run's pseudo-label maps and labels (see the module docstring)."""

    def __init__(self, net: nn.Module, which_map: str, background_scale: float, test_time: CamSettings,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, half: bool = False, fallback_output: bool = False):
        super().__init__()
        self.net = net.half() if half else net
        self.fallback_output = fallback_output
        self.which_map = which_map
        self.test_time = test_time
        self.mean, self.std = tuple(mean), tuple(std)
        self.half_precision = half
        self.register_buffer("background_weight", torch.tensor([float(background_scale)]))

    def forward(self, image: torch.Tensor, tags: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = image.half() if self.half_precision else image
        maps, fell_back = fused_maps(self.net, x, tags.to(x.dtype), (self.which_map,), self.test_time, self.mean,
                                     self.std)
        scores = maps[self.which_map].float()
        # aesipe.pseudo_labels.labels_from_fused, in torch: max-normalise, background x scale, argmax
        # (absent classes are zero in ``scores``, so they never win over the background).
        normalised = scores / (scores.amax(dim=(2, 3), keepdim=True) + MAX_NORM_EPS)
        weight = torch.cat([self.background_weight, torch.ones_like(scores[0, 1:, 0, 0])])
        labels = (normalised * weight[None, :, None, None]).argmax(dim=1).to(torch.uint8)
        if not self.fallback_output:
            return scores, labels
        return scores, labels, fell_back[self.which_map].to(torch.uint8)
