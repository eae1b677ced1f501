"""The stage-1 network's fused maps of an image at its own size: the one implementation that ``make-cam``
runs eagerly and the exported pseudo-labeller runs as a graph, so the two make the same maps.

For each test-time scale the [0, 1] image is resized (bicubic), normalised, and the network makes its
maps with the image's tags (with ``flip``, the image and its mirror are fused inside the network); only
the background and the tagged classes are kept; the maps (stride 16) are resized to the image (bilinear)
and summed over scales. The sum is *not* max-normalised here: ``aesipe.pseudo_labels`` does that, and
everything after it, in numpy.

A tagged class whose summed map is zero everywhere (every logit of the class negative at every scale: its
CAM is zero, so it gets no seed, a zero prototype and zero IS-CAM / AE-IS-CAM; or a class whose CAM is not
zero but lost every seed pixel to another class) would make the label the user asked for impossible. With
``zero_map_fallback`` such a channel is replaced by the class's CAM *before the ReLU* (``prerelu``: its
logits min-max normalised per scale, summed over the scales like the maps; chosen over the CAM itself on
MSRC val, benchmarks/RESULTS.md); ``fused_maps`` says which channels fell back, the others are untouched.

Optional PAMR refinement of these maps (``cam.pamr``): ``per_scale`` refines each scale's maps on the
image at 1/4 of that scale's size; ``fused`` refines the summed maps once, on the image at 1/4 of its size
(one PAMR instead of one per scale); only the channels of the image's tags are refined (the others are
zero). Resizing is torch's bicubic (a = -0.75, no antialiasing), exported as gathers rather than ONNX
Runtime's much slower cubic ``Resize`` (``aesipe.ops.resize``); the authors' PIL bicubic antialiases when
shrinking, so their scale-0.5 maps differ slightly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from aesipe.constants import PAMR_DILATIONS, PAMR_ITERATIONS, PAMR_MODES
from aesipe.ops.resize import resize_bicubic

PAMR_DOWNSCALE = 4
"""PAMR runs on the image at 1/4 size (as in the AE step): at full size its memory grows as K x P x H x W."""


@dataclass(frozen=True)
class CamSettings:
    """How ``fused_maps`` runs: test-time scales, flip fusion and PAMR refinement (``cam`` + ``model``)."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    pamr: str = "off"
    pamr_iters: int = PAMR_ITERATIONS
    pamr_dilations: tuple[int, ...] = PAMR_DILATIONS
    pamr_backend: str = "auto"
    zero_map_fallback: bool = True

    def __post_init__(self) -> None:
        if self.pamr not in PAMR_MODES:
            raise ValueError(f"pamr must be one of {PAMR_MODES}, got {self.pamr!r}")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive numbers, got {self.scales}")

    @classmethod
    def from_config(cls, cfg) -> "CamSettings":
        """The settings of a ``RunConfig`` (``cam.scales``, ``cam.flip``, ``cam.pamr``, ``model.pamr_*``)."""
        return cls(tuple(cfg.cam.scales), cfg.cam.flip, cfg.cam.pamr, cfg.model.pamr_iters,
                   tuple(cfg.model.pamr_dilations), cfg.model.pamr_backend, cfg.cam.zero_map_fallback)

    def describe(self) -> dict:
        return {"scales": list(self.scales), "flip": self.flip, "pamr": self.pamr,
                "pamr_iters": self.pamr_iters, "pamr_dilations": list(self.pamr_dilations),
                "pamr_downscale": PAMR_DOWNSCALE, "zero_map_fallback": self.zero_map_fallback}


def _refine(image01: torch.Tensor, maps: torch.Tensor, keep: torch.Tensor, tt: CamSettings) -> torch.Tensor:
    """PAMR of ``maps`` on ``image01`` resized to 1/4 of its size; result at that 1/4 size. Only the
    channels ``keep`` [B, K, 1, 1] keeps are refined (``maps`` is zero in the others)."""
    from aesipe.ops.pamr import pamr_kept_channels

    height, width = image01.shape[-2:]
    # Images under 4 px on a side have no 1/4-size image to refine on: make-cam and aesipe-label need
    # >= 4 px when cam.pamr is on (a max(1, ...) here would put Max() guards into the exported shapes).
    size = (height // PAMR_DOWNSCALE, width // PAMR_DOWNSCALE)
    small = F.interpolate(image01, size=size, mode="bilinear", align_corners=False)
    return pamr_kept_channels(small, maps, keep.flatten(1), tt.pamr_iters, tt.pamr_dilations, tt.pamr_backend)


def fused_maps(
    net: torch.nn.Module,
    image01: torch.Tensor,
    tags: torch.Tensor,
    keys: Sequence[str],
    tt: CamSettings,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(``{key: summed maps [B, 1+C, H, W]}`` at the size of ``image01`` ([B, 3, H, W] RGB in [0, 1]),
    ``{key: fell back [B, 1+C] bool}``: the tagged channels whose map was all zero and now hold the class's
    pre-ReLU CAM (all False without ``tt.zero_map_fallback``)).

    ``tags`` [B, C] multi-hot; ``keys`` among the network's maps (cam, iscam, aeiscam); ``mean``/``std``
    the normalisation the network was trained with."""
    height, width = image01.shape[-2:]
    mean_t = torch.as_tensor(mean, dtype=image01.dtype, device=image01.device).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=image01.dtype, device=image01.device).view(1, 3, 1, 1)
    keep = torch.cat([torch.ones_like(tags[:, :1]), tags], dim=1).float()[:, :, None, None]
    totals: dict[str, torch.Tensor] = {}
    # Networks without a pre-ReLU map (stand-ins in tests) get no fallback.
    with_fallback = tt.zero_map_fallback and getattr(net, "makes_prerelu", False)
    sum_keys = (*keys, FALLBACK_KEY) if with_fallback else tuple(keys)
    for scale in tt.scales:
        x = image01
        if scale != 1.0:
            x = resize_bicubic(image01, scale).clamp(0.0, 1.0)
        normalised = (x - mean_t) / std_t
        maps = (net.maps(normalised, tags.to(x.dtype), flip=tt.flip, prerelu=True) if with_fallback
                else net.maps(normalised, tags.to(x.dtype), flip=tt.flip))
        for key in sum_keys:
            value = maps[key].float() * keep
            if tt.pamr == "per_scale" and key != FALLBACK_KEY:
                value = _refine(x.float(), value, keep, tt)
            value = F.interpolate(value, size=(height, width), mode="bilinear", align_corners=False)
            totals[key] = totals[key] + value if key in totals else value
    if tt.pamr == "fused":  # the maps, not the pre-ReLU stand-in (as per_scale)
        for key in keys:
            refined = _refine(image01.float(), totals[key], keep, tt)
            totals[key] = F.interpolate(refined, size=(height, width), mode="bilinear", align_corners=False)
    prerelu = totals.pop(FALLBACK_KEY, None)
    out, fell_back = {}, {}
    for key in keys:
        value = totals[key] * keep
        if prerelu is None:
            fell_back[key] = torch.zeros_like(keep[:, :, 0, 0], dtype=torch.bool)
        else:
            value, fell_back[key] = with_zero_map_fallback(value, prerelu * keep, keep)
        out[key] = value
    return out, fell_back


FALLBACK_KEY = "prerelu"
"""The network's map that stands in for an all-zero map of a tagged class."""


def with_zero_map_fallback(
    maps: torch.Tensor, fallback: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(maps with every tagged foreground channel that is zero everywhere replaced by ``fallback``'s channel,
    which channels were replaced [B, K] bool). Branch-free, so it exports. ``keep`` [B, K, 1, 1]."""
    foreground = torch.cat([torch.zeros_like(keep[:, :1]), torch.ones_like(keep[:, 1:])], dim=1)
    empty = (maps.amax(dim=(2, 3), keepdim=True) <= 0) & (keep * foreground > 0)
    return torch.where(empty, fallback, maps), empty[:, :, 0, 0]
