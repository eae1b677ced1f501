"""The AE-SIPE stage-1 network: CAM -> seeds -> prototypes -> IS-CAM -> [PAMR -> prototypes -> AE-IS-CAM].

``forward(image, labels, valid)`` is the training pass (maps masked by tags and crop validity);
``maps(image, labels)`` is inference/export (tags as a second input). Every map is [B, 1+C, h, w] at
stride 16 with channel 0 = background. After the SIPE baseline IS-CAM, the affinity-enhancement switch
runs a short program of steps (``AE_PROGRAMS``): "pamr" refines the current map with PAMR (no gradient),
"pr_is" takes its argmax as seeds, makes prototypes and re-activates. Each Table-3 row is one program.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aesipe.constants import IMAGENET_MEAN, IMAGENET_STD, PAMR_DILATIONS, PAMR_ITERATIONS
from aesipe.ops.pamr import pamr_kept_channels

from . import sipe_modules as sm
from .backbones import build_backbone

AE_PROGRAMS: dict[str, tuple[str, ...]] = {
    "ae": ("pamr", "pr_is"),  # AE-SIPE
    "extra_pr_is": ("pr_is",),
    "pr_is_pamr_pr_is": ("pr_is", "pamr", "pr_is"),
    "pamr_pr_is_pr_is": ("pamr", "pr_is", "pr_is"),
}
SIDE_CHANNELS = {
    "resnet50": (128, 128, 256, 256),  # the authors' side1..side4
    "resnet101": (128, 128, 256, 256),
    "mobilenet_v2": (32, 32, 64, 64),  # ResNet's widths / 4 (its stages are 24/32/96/1280 wide)
}


class AESIPENet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        pretrained: str | None = None,
        no_pretrained: bool = False,
        bn: str = "frozen_stats",
        hierarchical_seeds: bool = True,
        affinity_enhancement: bool = True,
        iscam_normalisation: bool = True,
        ae_variant: str = "ae",
        background_seed_scale: float = 0.5,
        pamr_iters: int = PAMR_ITERATIONS,
        pamr_dilations: tuple[int, ...] = PAMR_DILATIONS,
        pamr_backend: str = "auto",
        mask_ae_seeds: bool = False,
        ae_align_corners: bool = True,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ):
        super().__init__()
        if ae_variant not in AE_PROGRAMS:
            raise ValueError(f"ae_variant must be one of {sorted(AE_PROGRAMS)}, got {ae_variant!r}")
        self.num_classes = num_classes
        # SIPE: stem + layer1 + layer2 frozen and detached, layer3/4 train. BatchNorm keeps the ImageNet
        # statistics (``bn``: the scale/shift of layer3/4 train with them, or are frozen too); a random-init
        # network has no statistics to keep (frozen identity statistics shrink the activations ~10x per
        # stage until the classifier sees zeros), so it is built with bn="train".
        self.backbone = build_backbone(backbone, pretrained, no_pretrained, output_stride=16, trainable_from=2, bn=bn)
        self.side = nn.ModuleList(
            nn.Conv2d(cin, cout, 1, bias=False) for cin, cout in zip(self.backbone.channels, SIDE_CHANNELS[backbone])
        )
        self.classifier = nn.Conv2d(self.backbone.channels[3], num_classes, 1, bias=False)
        self.hierarchical_seeds = hierarchical_seeds
        self.program = AE_PROGRAMS[ae_variant] if affinity_enhancement else ()
        self.iscam_normalisation = iscam_normalisation
        self.background_seed_scale = background_seed_scale
        self.pamr_iters, self.pamr_dilations, self.pamr_backend = pamr_iters, tuple(pamr_dilations), pamr_backend
        self.mask_ae_seeds = mask_ae_seeds
        self.ae_align_corners = ae_align_corners
        # [0,1] scale: PAMR only needs RGB up to a constant factor (it is scale-invariant).
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    makes_prerelu = True
    """``maps(..., prerelu=True)`` also returns the pre-ReLU CAM (``aesipe.models.pseudo_maps``' fallback)."""

    @property
    def has_ae(self) -> bool:
        return bool(self.program)

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone, new layers): the optimiser gives new layers ``new_layer_lr_mult`` x the lr."""
        new = [*self.side.parameters(), *self.classifier.parameters()]
        return [p for p in self.backbone.parameters() if p.requires_grad], new

    # ------------------------------------------------------------------ features
    def _features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(last-stage features [B, 2048, h, w], hierarchical features [B, 768, h, w]) at stride 16."""
        stages = self.backbone(image)
        size = stages[2].shape[-2:]
        parts = []
        for conv, x in zip(self.side, stages):
            side = sm.l2_normalise(conv(x.detach()))
            parts.append(F.interpolate(side, size=size, mode="bilinear", align_corners=False))
        return stages[3], torch.cat(parts, dim=1)

    # ------------------------------------------------------------------ the map pipeline
    def _refine_with_pamr(self, image: torch.Tensor, maps: torch.Tensor, tag_mask: torch.Tensor) -> torch.Tensor:
        """PAMR on the de-normalised image at 1/4 size; result resized back to the maps' size. No gradient.

        Only the channels of the batch's tags are refined: the others are zero in every map this
        runs on (no seeds, so a zero prototype and a zero map) and PAMR keeps zero channels zero.

        Both resizes use ``align_corners=True`` as the authors' code does (``ae_align_corners``); with
        False the 1/4 -> stride-16 round trip is not the identity at the borders."""
        corners = self.ae_align_corners
        with torch.no_grad(), sm.float32_region(image.device.type):
            rgb = image.detach().float() * self.std + self.mean
            h, w = image.shape[-2:]
            rgb = F.interpolate(rgb, size=(h // 4, w // 4), mode="bilinear", align_corners=corners)
            refined = pamr_kept_channels(rgb, maps.detach().float(), tag_mask.flatten(1), self.pamr_iters,
                                         self.pamr_dilations, self.pamr_backend)
            refined = F.interpolate(refined, size=maps.shape[-2:], mode="bilinear", align_corners=corners)
        return refined.to(maps.dtype)

    def _pipeline(
        self, image: torch.Tensor, cam: torch.Tensor, seed_features: torch.Tensor, hie: torch.Tensor,
        label_mask: torch.Tensor, tag_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """``label_mask``: tags x crop-valid mask (training) or tags; ``tag_mask``: tags only [B, 1+C, 1, 1]."""
        seeds = sm.structure_seeds(cam, seed_features, label_mask, self.background_seed_scale)
        iscam = sm.reactivate(sm.prototypes(seeds, hie), hie)
        current = iscam
        # The authors take the AE seeds' argmax without the crop-valid mask: padding pixels join a class
        # (usually background) and shape its prototype. ``mask_ae_seeds`` masks them instead.
        ae_seed_mask = label_mask if self.mask_ae_seeds else tag_mask
        for step in self.program:
            if step == "pamr":
                current = self._refine_with_pamr(image, current, tag_mask)
            else:  # "pr_is"
                seeds = sm.one_hot_argmax(current, ae_seed_mask)
                current = sm.reactivate(sm.prototypes(seeds, hie), hie)
        out = {"cam": cam, "iscam": iscam}
        if self.has_ae:
            out["aeiscam"] = current
        final_key = "aeiscam" if self.has_ae else "iscam"
        if self.iscam_normalisation:
            out[final_key] = sm.max_normalise(out[final_key])
        out["final"] = out[final_key]
        return out

    def forward(
        self, image: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Training pass. ``labels`` [B, C] multi-hot; ``valid`` [B, H, W] crop-valid mask (1 = image).

        Returns ``score`` [B, C] (for the classification loss) and the masked maps ``cam``, ``iscam``,
        ``aeiscam`` (with AE) and ``final`` (the GSC target). Seeds use the last-stage features unless
        ``hierarchical_seeds`` (the HF switch)."""
        last, hie = self._features(image)
        logits = self.classifier(last)
        score = logits.mean(dim=(2, 3))
        tag_mask = _label_mask(labels, logits)
        label_mask = tag_mask
        if valid is not None:
            low = F.interpolate(valid[:, None].to(logits.dtype), size=logits.shape[-2:], mode="nearest")
            label_mask = tag_mask * low
        cam = sm.cam_with_background(logits) * label_mask
        seed_features = hie if self.hierarchical_seeds else last
        out = self._pipeline(image, cam, seed_features, hie, label_mask, tag_mask)
        out["score"] = score
        return out

    def maps(self, image: torch.Tensor, labels: torch.Tensor, flip: bool = False,
             prerelu: bool = False) -> dict[str, torch.Tensor]:
        """Inference maps at stride 16 for normalised ``image`` [B,3,H,W] and tags ``labels`` [B, C].

        ``cam`` is the plain CAM of every class (background = 1 - max over all foreground channels);
        ``iscam`` and (with AE) ``aeiscam`` use the tags for their seeds, as the authors' inference does;
        with ``prerelu``, also ``prerelu``: each class's CAM before the ReLU, min-max normalised (background
        channel zero), the fallback for a tagged class whose maps are all zero (``aesipe.models.pseudo_maps``).
        With ``flip``, each image's logits and hierarchical features are summed with those of its mirror
        before the maps are made (the authors' flip fusion). Seeds come from the hierarchical features
        here whatever ``hierarchical_seeds`` says: SIPE's inference uses them too.
        """
        if flip:
            last, hie = self._features(torch.cat([image, image.flip(-1)], dim=0))
            b = image.shape[0]
            logits = self.classifier(last)
            logits = logits[:b] + logits[b:].flip(-1)
            hie = hie[:b] + hie[b:].flip(-1)
        else:
            last, hie = self._features(image)
            logits = self.classifier(last)
        label_mask = _label_mask(labels, logits)
        out = self._pipeline(image, sm.cam_with_background(logits), hie, hie, label_mask, label_mask)
        out.pop("final")
        if prerelu:
            out["prerelu"] = sm.prerelu_cam(logits)
        return out


def _label_mask(labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B, C] tags -> [B, 1+C, 1, 1] with the background always present."""
    ones = torch.ones_like(labels[:, :1])
    return torch.cat([ones, labels], dim=1).to(like.dtype)[:, :, None, None]


def build_aesipe(cfg, num_classes: int, backbone_weights: bool = True) -> AESIPENet:
    """The network a ``RunConfig`` describes. ``backbone_weights=False`` skips the ImageNet weights
    (the caller loads a full checkpoint next: make-cam, export, import)."""
    m = cfg.model
    return AESIPENet(
        num_classes,
        backbone=m.backbone,
        pretrained=m.pretrained,
        no_pretrained=m.no_pretrained or not backbone_weights,
        # From the config, not from backbone_weights: a checkpoint must meet the model it was trained as.
        bn="train" if m.no_pretrained else ("frozen" if m.freeze_bn_affine else "frozen_stats"),
        hierarchical_seeds=m.hierarchical_seeds,
        affinity_enhancement=m.affinity_enhancement,
        iscam_normalisation=m.iscam_normalisation,
        ae_variant=m.ae_variant,
        background_seed_scale=m.background_seed_scale,
        pamr_iters=m.pamr_iters,
        pamr_dilations=m.pamr_dilations,
        pamr_backend=m.pamr_backend,
        mask_ae_seeds=m.mask_ae_seeds,
        ae_align_corners=m.ae_align_corners,
    )
