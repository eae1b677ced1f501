"""IRN (Ahn et al., CVPR 2019): class-boundary and displacement branches on a frozen backbone.

Both branches read five detached backbone features: x1 (stem, stride 4), x2 (stride 4), x3 (stride 8),
x4 and x5 (stride 16; output stride 16). ResNet: x1 = conv1..maxpool (64 ch), x2 = layer1, x3..x5 =
layer2..layer4. MobileNetV2: x1 = features[0:3], x2 = features[3] (both 24 ch, stride 4), x3..x5 =
the remaining backbone stages. Every branch layer is a 1x1 conv + GroupNorm (+ upsampling) + ReLU, as in
the reference network; the edge branch ends in one logit per stride-4 pixel, the displacement branch in
a 2-channel field (dy, dx) with a running-mean shift (IRN's ``MeanShift``).

``irn_losses`` turns the outputs and the affinity labels of ``PathIndex.affinity_labels`` into the IRN
losses: positive affinity (background and foreground pairs averaged), negative affinity on the edge
branch, and displacement losses (foreground pairs: D(p) - D(q) = q - p; background pairs: 0).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import build_backbone
from .path_index import PathIndex

IRN_BACKBONES = ("resnet50", "mobilenet_v2")
# Stage-0 split (x1 | x2) and the channels of x1..x5 per backbone.
_STEM_SPLIT = {"resnet50": 4, "mobilenet_v2": 3}
_CHANNELS = {"resnet50": (64, 256, 512, 1024, 2048), "mobilenet_v2": (24, 24, 32, 96, 1280)}


def _branch(in_ch: int, out_ch: int, groups: int, upsample: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.GroupNorm(groups, out_ch)]
    if upsample > 1:
        layers.append(nn.Upsample(scale_factor=upsample, mode="bilinear", align_corners=False))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class IRNet(nn.Module):
    """``forward(x)`` -> (edge logits [B, 1, h, w], displacement [B, 2, h, w]), h, w = stride-4 size."""

    def __init__(self, backbone: str = "resnet50", pretrained: str | Path | None = None, no_pretrained: bool = False):
        super().__init__()
        if backbone not in IRN_BACKBONES:
            raise ValueError(f"IRN backbone must be one of {IRN_BACKBONES}, got {backbone!r}")
        self.backbone_name = backbone
        # Nothing in the backbone trains: frozen BatchNorm, no gradients, outputs detached.
        self.backbone = build_backbone(backbone, pretrained, no_pretrained, output_stride=16, trainable_from=4)
        self._split = _STEM_SPLIT[backbone]
        c1, c2, c3, c4, c5 = _CHANNELS[backbone]
        self.edge_layers = nn.ModuleList([
            _branch(c1, 32, 4),
            _branch(c2, 32, 4),
            _branch(c3, 32, 4, upsample=2),
            _branch(c4, 32, 4, upsample=4),
            _branch(c5, 32, 4, upsample=4),
            nn.Conv2d(160, 1, 1, bias=True),
        ])
        self.dp_layers = nn.ModuleList([
            _branch(c1, 64, 8),
            _branch(c2, 128, 16),
            _branch(c3, 256, 16),
            _branch(c4, 256, 16, upsample=2),
            _branch(c5, 256, 16, upsample=2),
            _branch(768, 256, 16, upsample=2),
            nn.Sequential(_branch(448, 256, 16), nn.Conv2d(256, 2, 1, bias=False)),
        ])
        # IRN's MeanShift: a running mean of the displacement field, subtracted at inference.
        self.register_buffer("displacement_mean", torch.zeros(2))
        self.mean_momentum = 0.1

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        stages = self.backbone.stages
        with torch.no_grad():
            x1 = stages[0][: self._split](x)
            x2 = stages[0][self._split :](x1)
            x3 = stages[1](x2)
            x4 = stages[2](x3)
            x5 = stages[3](x4)
        return [t.detach() for t in (x1, x2, x3, x4, x5)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2, x3, x4, x5 = self.features(x)
        e = self.edge_layers
        edge2 = e[1](x2)
        size = edge2.shape[-2:]
        crop = lambda t: t[..., : size[0], : size[1]]  # noqa: E731  (upsampled maps may be 1 px larger)
        edge = e[5](torch.cat([e[0](x1), edge2, crop(e[2](x3)), crop(e[3](x4)), crop(e[4](x5))], dim=1))
        d = self.dp_layers
        dp3 = d[2](x3)
        mid = lambda t: t[..., : dp3.shape[-2], : dp3.shape[-1]]  # noqa: E731
        dp_up3 = crop(d[5](torch.cat([dp3, mid(d[3](x4)), mid(d[4](x5))], dim=1)))
        disp = d[6](torch.cat([d[0](x1), d[1](x2), dp_up3], dim=1))
        if self.training:
            with torch.no_grad():
                batch_mean = disp.detach().float().mean(dim=(0, 2, 3))
                self.displacement_mean.lerp_(batch_mean, self.mean_momentum)
            return edge, disp
        return edge, disp - self.displacement_mean.view(1, 2, 1, 1).to(disp.dtype)

    def train(self, mode: bool = True) -> "IRNet":
        super().train(mode)
        self.backbone.eval()
        return self

    def trainable_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(edge branch, displacement branch): the reference trains the second at 10x the learning rate."""
        return list(self.edge_layers.parameters()), list(self.dp_layers.parameters())

    @torch.no_grad()
    def edge_probabilities(self, image: torch.Tensor, pad_to: int | None = None) -> torch.Tensor:
        """Class-boundary map of one normalised image [3, H, W] with its flip: [ceil(H/4), ceil(W/4)].

        ``pad_to``: zero-pad the image (bottom/right) up to this size first, as SIPE/AE-SIPE do at
        inference so GroupNorm sees the statistics of the training crops.
        """
        height, width = image.shape[-2:]
        pair = torch.stack([image, image.flip(-1)])
        if pad_to is not None:
            pair = F.pad(pair, (0, max(0, pad_to - width), 0, max(0, pad_to - height)))
        edge, _ = self(pair)
        fh, fw = (height + 3) // 4, (width + 3) // 4
        edge = edge[..., :fh, :fw].float()
        return torch.sigmoid(edge[0, 0] / 2 + edge[1, 0].flip(-1) / 2)


def irn_losses(
    edge_logits: torch.Tensor,
    displacement: torch.Tensor,
    bg_pos: torch.Tensor,
    fg_pos: torch.Tensor,
    neg: torch.Tensor,
    index: PathIndex,
) -> dict[str, torch.Tensor]:
    """IRN's four losses and their total ``loss`` = (pos + neg) / 2 + (dp_fg + dp_bg) / 2.

    Labels are [B, D, n_src] (``PathIndex.affinity_labels`` of the stride-4 IR label map).
    """
    affinity = index.path_affinity(torch.sigmoid(edge_logits.float()))
    pos_term = -torch.log(affinity + 1e-5)
    neg_term = -torch.log(1.0 + 1e-5 - affinity)
    bg_pos_loss = (bg_pos * pos_term).sum() / (bg_pos.sum() + 1e-5)
    fg_pos_loss = (fg_pos * pos_term).sum() / (fg_pos.sum() + 1e-5)
    pos_loss = bg_pos_loss / 2 + fg_pos_loss / 2
    neg_loss = (neg * neg_term).sum() / (neg.sum() + 1e-5)
    pair_disp = index.pair_displacement(displacement.float())
    target = index.displacement_target(device=pair_disp.device)
    dp_fg = ((pair_disp - target).abs() * fg_pos.unsqueeze(1)).sum() / (2 * fg_pos.sum() + 1e-5)
    dp_bg = (pair_disp.abs() * bg_pos.unsqueeze(1)).sum() / (2 * bg_pos.sum() + 1e-5)
    total = (pos_loss + neg_loss) / 2 + (dp_fg + dp_bg) / 2
    return {"loss": total, "pos_aff": pos_loss, "neg_aff": neg_loss, "dp_fg": dp_fg, "dp_bg": dp_bg}


def build_irn(backbone: str = "resnet50", pretrained: str | Path | None = None, no_pretrained: bool = False) -> IRNet:
    return IRNet(backbone, pretrained, no_pretrained)


__all__: Sequence[str] = ("IRNet", "build_irn", "irn_losses", "IRN_BACKBONES")
