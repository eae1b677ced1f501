"""Config sections of stage 1 and of what every stage shares: data, runtime, the stage-1 model, the training
solver (one type for stage 1, IRN and the segmenter), make-cam / eval-cam, and the dense CRF."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ..constants import PAMR_DILATIONS, PAMR_ITERATIONS
from .checks import at_least, non_empty, ordered_range, positive
from .loading import FieldError

Backbone = Literal["resnet50", "resnet101", "mobilenet_v2"]


@dataclass(frozen=True)
class DataConfig:
    """The dataset: where it is, which splits train, make pseudo-labels and judge the segmenter."""

    root: str = "data/synth"
    """Dataset folder: VOC 2012 (``VOCdevkit/VOC2012``), any VOC-style folder, or synthetic data."""
    kind: Literal["auto", "voc", "folder"] = "auto"
    """``voc``: PASCAL VOC 2012 + SBD (20 built-in classes); ``folder``: VOC layout with class_names.txt."""
    train_split: str = "train_aug"
    """Split the stage-1 network and IRN train on (VOC: train_aug = 10,582 images; folders: train)."""
    cam_split: str = "train"
    """Split the pseudo-labels are made and judged on (VOC convention: train, 1,464 images with GT)."""
    eval_split: str = "val"
    """Split the segmenter is judged on."""
    labels_csv: str | None = None
    """Optional ``image,labels`` CSV; default: ``labels_<split>.csv`` in the root, else derived from masks.
    A relative path is inside the dataset folder (the one holding JPEGImages/), not the current folder."""
    workers: int = 2
    """DataLoader worker processes."""

    def __post_init__(self) -> None:
        at_least(self, 0, "workers")


@dataclass(frozen=True)
class RuntimeConfig:
    """Where the stages run. Never changes what they make, so the pipeline does not redo work for it."""

    device: str = "auto"
    """auto (a CUDA GPU when visible, else the CPU) | cpu | cuda | cuda:N (that GPU)."""
    amp: bool = True
    """Mixed precision (float16 autocast) on CUDA for the training stages; ignored on the CPU."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise FieldError("device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The stage-1 network (AE-SIPE) and the switches of the paper's Tables 2 and 3."""

    backbone: Backbone = "resnet50"
    """ResNet-50 (authors' code), ResNet-101 (paper) or MobileNetV2 (CPU-sized runs)."""
    pretrained: str | None = None
    """Path to ImageNet weights for the backbone (torchvision state_dict). None: torch hub cache if present."""
    no_pretrained: bool = False
    """Start from random init on purpose (tests, synthetic data); the backbone's BatchNorm then trains
    (there are no ImageNet statistics to keep frozen)."""
    hierarchical_seeds: bool = True
    """HF switch: structure analysis on hierarchical features (AE-SIPE) instead of last-stage ones (SIPE) in
    training. Inference (make-cam, export) always seeds from the hierarchical features, as both authors' codes do."""
    affinity_enhancement: bool = True
    """AE switch: PAMR-refined seeds -> prototypes -> AE-IS-CAM."""
    iscam_normalisation: bool = True
    """Divide the (AE-)IS-CAM by its per-channel max (+1e-5) (authors' code)."""
    ae_variant: Literal["ae", "extra_pr_is", "pr_is_pamr_pr_is", "pamr_pr_is_pr_is"] = "ae"
    """Table 3, the steps after SIPE's IS-CAM when affinity_enhancement is on: ae = (PAMR,Pr,IS);
    extra_pr_is = (Pr,IS); pr_is_pamr_pr_is = (Pr,IS,PAMR,Pr,IS); pamr_pr_is_pr_is = (PAMR,Pr,IS,Pr,IS)."""
    background_seed_scale: float = 0.5
    """Background soft-IoU multiplier in structure analysis."""
    pamr_iters: int = PAMR_ITERATIONS
    """PAMR iterations (the affinity enhancement's refinement, and cam.pamr's)."""
    pamr_dilations: tuple[int, ...] = PAMR_DILATIONS
    """PAMR neighbourhood: the 8-pixel ring at each of these distances."""
    pamr_backend: Literal["auto", "fused", "reference"] = "auto"
    """fused = the compiled aesipe::pamr op; reference = pure PyTorch; auto = fused where it is built."""
    freeze_bn_affine: bool = False
    """Also freeze the BatchNorm scale/shift of the trainable stages (layer3/4). The authors freeze only the
    statistics and train scale/shift with the backbone (the default). Ignored with no_pretrained."""
    mask_ae_seeds: bool = False
    """Mask the AE seeds (argmax of the PAMR-refined map) by the crop-valid mask in training. The authors
    do not: padding pixels then join a class, usually background (the default)."""
    ae_align_corners: bool = True
    """Resize the image to 1/4 and the refined map back with align_corners=True, as the authors do; False
    makes the round trip inexact at the borders (aesipe 0.1)."""

    def __post_init__(self) -> None:
        at_least(self, 0, "pamr_iters")
        non_empty(self, "pamr_dilations")
        positive(self, "pamr_dilations", "background_seed_scale")


@dataclass(frozen=True)
class SolverConfig:
    """What every training stage (stage 1, IRN, the segmenter) is trained with: the shared section type."""

    batch_size: int = 16
    """Images per optimiser step (per process under torchrun)."""
    epochs: int = 5
    """Passes over the training split (full batches only)."""
    max_steps: int | None = None
    """Stop after this many optimiser steps (overrides epochs when set)."""
    crop_size: int = 512
    """Side of the square training crops (padded where the image is smaller)."""
    lr: float | None = None
    """Learning rate of the backbone group; the stage's second group uses it x its multiplier. None: the
    paper's 0.01 (momentum 0.9), or the code's 0.1 when ``reference_optimizer`` is on (the two have about
    the same effective step lr / (1 - momentum))."""
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    """Poly decay: lr x (1 - step / max_steps) ** poly_power."""
    reference_optimizer: bool = False
    """Reproduce the authors' optimiser exactly: their PolyOptimizer passes weight decay where SGD expects
    momentum, so it trains with momentum = weight_decay (1e-4) while each group still applies weight_decay;
    with lr unset it also takes the code's lr 0.1."""
    seed: int = 0
    """Seeds the sampler, the augmentations and the initialisation: the same seed gives the same run."""
    checkpoint_every: int = 200
    """Save a resumable checkpoint every N optimiser steps (and at the end)."""
    log_every: int = 10
    """Write a log.csv row (losses, learning rates) every N steps."""
    average_last: float = 0.0
    """Average the weights over the last fraction of the optimiser steps (uniform, after every step, as
    stochastic weight averaging does) and make that average ``final.pt``; 0 keeps the last weights. The last
    weights stay in ``checkpoints/last.pt``."""

    def __post_init__(self) -> None:
        at_least(self, 1, "batch_size", "epochs", "max_steps", "checkpoint_every", "log_every")
        if not 0 <= self.average_last < 1:
            raise FieldError("average_last", f"must lie in [0, 1), got {self.average_last!r}")
        at_least(self, 16, "crop_size")
        positive(self, "lr")
        at_least(self, 0, "weight_decay", "poly_power")
        if not 0 <= self.momentum < 1:
            raise FieldError("momentum", f"must lie in [0, 1), got {self.momentum!r}")


@dataclass(frozen=True)
class TrainConfig(SolverConfig):
    """Stage 1 (AE-SIPE) recipe: the authors' effective behaviour (see ``reference_optimizer``)."""

    resize_long: tuple[int, int] = (320, 640)
    """Random resize of the long side into this range before flip and crop."""
    new_layer_lr_mult: float = 10.0
    """The new layers (side convs, classifier) train at lr x this."""
    grad_clip: float = 1.0
    """Clip the gradient norm of all trainable parameters to this (0: no clipping)."""
    gsc_weight: float = 1.0
    """Weight of the general-specific consistency loss beside the classification loss."""

    def __post_init__(self) -> None:
        super().__post_init__()
        ordered_range(self, "resize_long")
        positive(self, "new_layer_lr_mult")
        at_least(self, 0, "grad_clip", "gsc_weight")


@dataclass(frozen=True)
class CamConfig:
    """Stage-1 inference (make-cam) and pseudo-label judging (eval-cam)."""

    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    """Test-time scales; each scale's maps are resized to the image and summed."""
    flip: bool = True
    """Fuse each scale with its mirror inside the network (logits and features summed)."""
    map: Literal["cam", "iscam", "aeiscam"] = "aeiscam"
    """Which map becomes the pseudo-label: plain CAM, SIPE's IS-CAM or AE-SIPE's AE-IS-CAM. ``aesipe-train
    calibrate`` picks it (each map at its own best background scale) on a few masks."""
    background_scale: float = 0.8
    """Background channel multiplier before argmax (SIPE: 1.0). ``aesipe-train calibrate`` sets it from masks."""
    crf: bool = False
    """Refine the pseudo-labels with the label CRF (the ``crf`` section) after background x scale: eval-cam and
    the pipeline judge them so, and the exported pseudo-labeller tells aesipe-label to. ``aesipe-train
    calibrate`` turns it on when the CRF helps on its masks."""
    zero_map_fallback: bool = True
    """A tagged class whose map is zero everywhere (all its logits negative, so no seed and no prototype)
    gets its CAM before the ReLU (min-max normalised logits) instead, so the label asked for stays possible;
    make-cam, eval-cam and the exported pseudo-labeller report such classes."""
    sweep: tuple[float, ...] = ()
    """Optional background scales to sweep in eval-cam."""
    pamr: Literal["off", "per_scale", "fused"] = "off"
    """PAMR refinement of the final maps, made the same way by make-cam and the exported pseudo-labeller:
    off; per_scale = each scale's maps on the image at 1/4 of that scale's size; fused = the maps summed
    over scales, once, on the image at 1/4 size. Settings: model.pamr_iters / pamr_dilations. off is the
    default: on MSRC-21 val (AE-SIPE, 3 seeds, background x1.0) off 56.6, per_scale 56.2, fused 54.6 mIoU,
    and off makes CAMs in half the time (benchmarks/RESULTS.md, "PAMR on the final maps")."""
    batch_size: int = 1

    def __post_init__(self) -> None:
        non_empty(self, "scales")
        positive(self, "scales", "background_scale", "sweep")
        at_least(self, 1, "batch_size")


@dataclass(frozen=True)
class CrfConfig:
    """Dense CRF (Krähenbühl & Koltun) with the authors' settings (docs/method.md)."""

    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0
    gt_prob: float = 0.7
    """Confidence of the label unary (unary_from_labels)."""
    protocol: Literal["label", "ir"] = "label"
    """label: one label-CRF after background scaling (AE-SIPE "+CRF"); ir: IR-label protocol with
    unsure pixels counted as background (SIPE "+CRF")."""
    workers: int = 2
    """CRF worker processes."""

    def __post_init__(self) -> None:
        at_least(self, 1, "iterations")
        at_least(self, 0, "workers")
        if not 0 < self.gt_prob < 1:
            raise FieldError("gt_prob", f"must lie in (0, 1), got {self.gt_prob!r}")
