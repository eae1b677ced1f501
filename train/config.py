"""The training pipeline's configuration: one frozen dataclass per section, defaults = published recipe.

Every switch of METHOD.md is a field here, so each row of the paper's Tables 2 and 3 is one config
(see ``configs/``). Load with ``aesipe.config.load_config(RunConfig, recipe, overrides)``; the resolved
config is written to ``<run>/config.toml`` and stored inside every checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Backbone = Literal["resnet50", "resnet101", "mobilenet_v2"]


@dataclass(frozen=True)
class DataConfig:
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
    """Optional ``image,labels`` CSV; default: ``labels_<split>.csv`` in the root, else derived from masks."""
    workers: int = 2
    """DataLoader worker processes."""


@dataclass(frozen=True)
class ModelConfig:
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
    pamr_iters: int = 10
    pamr_dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)
    pamr_backend: Literal["auto", "fused", "reference"] = "auto"
    freeze_bn_affine: bool = False
    """Also freeze the BatchNorm scale/shift of the trainable stages (layer3/4). The authors freeze only the
    statistics and train scale/shift with the backbone (the default). Ignored with no_pretrained."""
    mask_ae_seeds: bool = False
    """Mask the AE seeds (argmax of the PAMR-refined map) by the crop-valid mask in training. The authors
    do not: padding pixels then join a class, usually background (the default)."""
    ae_align_corners: bool = True
    """Resize the image to 1/4 and the refined map back with align_corners=True, as the authors do; False
    makes the round trip inexact at the borders (aesipe 0.1)."""


PAPER_LR = 0.01
"""Backbone lr of the paper (new layers x10) with momentum 0.9: about the effective step of the code."""
REFERENCE_LR = 0.1
"""Backbone lr of the authors' code, which trains with momentum 1e-4 (see ``reference_optimizer``)."""


@dataclass(frozen=True)
class TrainConfig:
    """Stage 1 (AE-SIPE) recipe: authors' code defaults; ``reference_optimizer`` reproduces its SGD bug."""

    batch_size: int = 16
    epochs: int = 5
    max_steps: int | None = None
    """Stop after this many optimiser steps (overrides epochs when set)."""
    crop_size: int = 512
    resize_long: tuple[int, int] = (320, 640)
    lr: float | None = None
    """Backbone learning rate; new layers use ``lr * new_layer_lr_mult``. None: the paper's 0.01, or the
    code's 0.1 when ``reference_optimizer`` is on (the two have about the same effective step)."""
    new_layer_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    momentum: float = 0.9
    poly_power: float = 0.9
    reference_optimizer: bool = False
    """Reproduce the reference code exactly: its PolyOptimizer passes weight decay where SGD expects momentum,
    so it trains with momentum = weight_decay (1e-4) while each param group still applies weight_decay;
    with lr unset it also takes the code's lr 0.1."""
    grad_clip: float = 1.0
    gsc_weight: float = 1.0
    amp: bool = True
    """Mixed precision on CUDA (ignored on CPU)."""
    seed: int = 0
    checkpoint_every: int = 200
    """Save a resumable checkpoint every N optimiser steps (and at the end)."""
    log_every: int = 10
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class CamConfig:
    """Stage-1 inference (make-cam) and pseudo-label judging (eval-cam)."""

    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    map: Literal["cam", "iscam", "aeiscam"] = "aeiscam"
    """Which map becomes the pseudo-label: plain CAM, SIPE's IS-CAM or AE-SIPE's AE-IS-CAM."""
    background_scale: float = 0.8
    """Background channel multiplier before argmax (SIPE: 1.0)."""
    sweep: tuple[float, ...] = ()
    """Optional background scales to sweep in eval-cam."""
    batch_size: int = 1


@dataclass(frozen=True)
class CrfConfig:
    """Dense CRF (Krähenbühl & Koltun) as in METHOD.md."""

    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0
    gt_prob: float = 0.7
    protocol: Literal["label", "ir"] = "label"
    """label: one label-CRF after background scaling (AE-SIPE "+CRF"); ir: IR-label protocol with
    unsure pixels counted as background (SIPE "+CRF")."""
    workers: int = 2


@dataclass(frozen=True)
class IrLabelConfig:
    fg_background_scale: float = 1.0
    """fg_conf = CRF(argmax of the maps as they are)."""
    bg_background_scale: float = 0.8
    """bg_conf = CRF(argmax with background x 0.8)."""
    workers: int = 2


@dataclass(frozen=True)
class IrnConfig:
    """Stage 2 (IRN) recipe of the reference code; the path index works on any crop (crop_size / 4)."""

    backbone: Literal["resnet50", "mobilenet_v2"] = "resnet50"
    """Frozen backbone: ResNet-50 (reference) or MobileNetV2 (CPU-sized runs)."""
    pretrained: str | None = None
    """Path to ImageNet weights (torchvision state_dict). None: model.pretrained when model.backbone is the
    same architecture, else the torch hub cache."""
    no_pretrained: bool = False
    """Random-init backbone on purpose (tests, synthetic data)."""
    crop_size: int = 512
    scale_range: tuple[float, float] = (0.5, 1.5)
    """Random rescale factor of image and IR label before flip and crop (reference: 0.5-1.5)."""
    batch_size: int = 32
    epochs: int = 3
    max_steps: int | None = None
    """Stop after this many optimiser steps (overrides epochs when set)."""
    lr: float | None = None
    """Edge branch learning rate; the displacement branch uses ``lr * displacement_lr_mult``. None: 0.01
    with momentum 0.9, or the code's 0.1 when ``reference_optimizer`` is on (same effective step)."""
    displacement_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    momentum: float = 0.9
    poly_power: float = 0.9
    reference_optimizer: bool = False
    """Reproduce the reference SGD exactly (it passes weight decay where SGD expects momentum, so momentum is
    1e-4); with lr unset it also takes the code's lr 0.1."""
    path_radius: int = 10
    """Pairs within this radius on the stride-4 label map (reference: 10 on 128 x 128 = crop 512 / 4)."""
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    amp: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class RandomWalkConfig:
    """make-seg-labels: IRN edge map (with flip) -> random walk of the stage-1 maps -> pseudo-labels."""

    beta: float = 10.0
    exp_times: int = 8
    """The transition is applied 2 ** exp_times times."""
    radius: int = 5
    power: float = 1.5
    """Maps (background included) are raised to this power before the walk."""
    background_threshold: float | None = None
    """IRN's sem_seg_bg_thres: walk the foreground maps only and use this constant as background
    (None: the background map is walked like the others, as SIPE/AE-SIPE do)."""
    pad_to_crop: bool = True
    """Zero-pad images up to irn.crop_size for the edge map, as SIPE/AE-SIPE's inference does."""
    method: Literal["auto", "sparse", "window", "dense"] = "auto"
    """How to apply the transition (same labels): sparse = CSR product, window = shifted slices (both
    linear memory), dense = the reference (HW)^2 matrix; auto = sparse on CUDA, window on CPU."""
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class SegConfig:
    """Stage 3: DeepLabV3 on the pseudo-labels (usual recipe)."""

    backbone: Literal["resnet101", "resnet50", "mobilenet_v2"] = "resnet101"
    pretrained: str | None = None
    """ImageNet backbone weights (torchvision state_dict file). None: model.pretrained when model.backbone
    is the same architecture, else the torch hub cache."""
    no_pretrained: bool = False
    freeze_bn: bool = False
    """Keep backbone BatchNorm in eval mode (small batches; weight files with folded BatchNorm)."""
    label_source: Literal["seg_labels", "pseudo_labels", "ir_labels"] = "seg_labels"
    """Which pseudo-labels of the run to train on: random-walk labels (default) or earlier ones."""
    train_split: str | None = None
    """Split to train on (None: data.cam_split, where the pseudo-labels are made)."""
    crop_size: int = 512
    scale_range: tuple[float, float] = (0.5, 2.0)
    color_jitter: float = 0.2
    batch_size: int = 16
    epochs: int = 30
    max_steps: int | None = None
    lr: float = 0.01
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 20
    amp: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    test_scales: tuple[float, ...] = (1.0,)
    test_flip: bool = False
    test_crf: bool = False


@dataclass(frozen=True)
class RunConfig:
    """Everything a run directory was made with (``<run>/config.toml``)."""

    run_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    crf: CrfConfig = field(default_factory=CrfConfig)
    ir_label: IrLabelConfig = field(default_factory=IrLabelConfig)
    irn: IrnConfig = field(default_factory=IrnConfig)
    random_walk: RandomWalkConfig = field(default_factory=RandomWalkConfig)
    seg: SegConfig = field(default_factory=SegConfig)
