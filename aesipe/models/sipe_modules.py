"""The building blocks of SIPE / AE-SIPE as plain tensor functions (docs/method.md, stage 1).

Shapes: maps are [B, K, h, w] with K = 1 + C (channel 0 = background); features are [B, D, h, w];
label masks broadcast against maps ([B, K, 1, 1] tags, or [B, K, h, w] tags x crop-valid mask).
Everything is branch-free on tensor values (empty seeds handled with clamp, not ``if``), so the
network traces and exports to ONNX with the tags as an input.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

EPS = 1e-5


@contextlib.contextmanager
def float32_region(device_type: str):
    """Run a block without autocast (the correlation/IoU sums and PAMR want float32)."""
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    else:
        yield


def l2_normalise(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Divide by the channel-wise L2 norm + eps (the authors' form, not F.normalize's max(norm, eps))."""
    return x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + eps)


def max_normalise(maps: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Divide each channel by its spatial maximum + eps."""
    return maps / (torch.amax(maps, dim=(2, 3), keepdim=True) + eps)


def cam_with_background(logits: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] classifier logits -> [B, 1+C, h, w]: ReLU, max-normalised, background = 1 - max fg."""
    cam = max_normalise(F.relu(logits))
    background = 1.0 - torch.amax(cam, dim=1, keepdim=True)
    return torch.cat([background, cam], dim=1)


def prerelu_cam(logits: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] logits -> [B, 1+C, h, w]: each class's logits min-max normalised to [0, 1] per image
    (where the class is *least unlikely*), background channel zero. Unlike the CAM this is not zero when
    every logit of the class is negative."""
    low = torch.amin(logits, dim=(2, 3), keepdim=True)
    high = torch.amax(logits, dim=(2, 3), keepdim=True)
    relative = (logits - low) / (high - low + EPS)
    return torch.cat([torch.zeros_like(relative[:, :1]), relative], dim=1)


def one_hot_argmax(maps: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
    """Seeds: one-hot of the per-pixel argmax, multiplied by the label mask (background always 1)."""
    index = maps.argmax(dim=1, keepdim=True)
    seeds = torch.zeros_like(maps).scatter_(1, index, 1.0)
    return seeds * label_mask


def soft_iou(cam: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Structure analysis: soft IoU between each pixel's correlation row and each class map.

    corr = ReLU(F^T F) over the L2-normalised pixel features; for class k and pixel i,
    IoU = sum_j corr_ij cam_k(j) / (sum_j corr_ij + sum_j cam_k(j) - sum_j corr_ij cam_k(j)).
    """
    b, k, h, w = cam.shape
    with float32_region(cam.device.type):
        feats = l2_normalise(features.float()).flatten(2)  # [B, D, N]
        corr = F.relu(torch.bmm(feats.transpose(1, 2), feats))  # [B, N, N], symmetric
        cam_flat = cam.float().flatten(2)  # [B, K, N]
        inter = torch.bmm(cam_flat, corr)  # [B, K, N]: sum_j cam_k(j) corr_ji = sum_j corr_ij cam_k(j)
        union = corr.sum(dim=2).unsqueeze(1) + cam_flat.sum(dim=2, keepdim=True) - inter
        iou = inter / union.clamp_min(1e-12)  # union > 0 unless a pixel's feature is exactly zero
    return iou.view(b, k, h, w)


def structure_seeds(
    cam: torch.Tensor, features: torch.Tensor, label_mask: torch.Tensor, background_scale: float = 0.5
) -> torch.Tensor:
    """SIPE's seeds: one-hot argmax of the soft IoU with the background IoU scaled, times the label mask."""
    iou = soft_iou(cam, features)
    scale = torch.ones(iou.shape[1], device=iou.device, dtype=iou.dtype)
    scale[0] = background_scale
    return one_hot_argmax(iou * scale.view(1, -1, 1, 1), label_mask)


def prototypes(seeds: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """p_k = mean feature over seed k -> [B, K, D]; an empty seed gives a zero prototype."""
    seeds = seeds.to(features.dtype)
    total = torch.einsum("bkhw,bdhw->bkd", seeds, features)
    count = seeds.sum(dim=(2, 3)).unsqueeze(-1)
    return total / count.clamp_min(1.0)


def reactivate(protos: torch.Tensor, features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """IS-CAM_k = ReLU(cosine(feature, p_k)) -> [B, K, h, w]; a zero prototype gives a zero map."""
    feats = features / torch.linalg.vector_norm(features, dim=1, keepdim=True).clamp_min(eps)
    protos = protos / torch.linalg.vector_norm(protos, dim=2, keepdim=True).clamp_min(eps)
    return F.relu(torch.einsum("bkd,bdhw->bkhw", protos, feats))


def gsc_loss(cam: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """General-specific consistency: mean |CAM - max-normalised (AE-)IS-CAM| over channels and pixels."""
    return torch.mean(torch.abs(cam - max_normalise(target)))
