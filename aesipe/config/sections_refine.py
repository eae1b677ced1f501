"""Config sections of stages 2 and 3: IR labels, IRN, the random walk and the DeepLabV3 segmenter."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .checks import at_least, non_empty, ordered_range, positive
from .loading import FieldError
from .sections import SolverConfig


@dataclass(frozen=True)
class IrLabelConfig:
    """IR labels for IRN: confident foreground and background from two CRFs (docs/method.md)."""

    fg_background_scale: float = 1.0
    """fg_conf = CRF(argmax of the maps as they are)."""
    bg_background_scale: float = 0.8
    """bg_conf = CRF(argmax with background x 0.8)."""
    workers: int = 2
    """CRF worker processes."""

    def __post_init__(self) -> None:
        positive(self, "fg_background_scale", "bg_background_scale")
        at_least(self, 0, "workers")


@dataclass(frozen=True)
class IrnConfig(SolverConfig):
    """Stage 2 (IRN) recipe of the reference code; the path index works on any crop (crop_size / 4)."""

    backbone: Literal["resnet50", "mobilenet_v2"] = "resnet50"
    """Frozen backbone: ResNet-50 (reference) or MobileNetV2 (CPU-sized runs)."""
    pretrained: str | None = None
    """Path to ImageNet weights (torchvision state_dict). None: model.pretrained when model.backbone is the
    same architecture, else the torch hub cache."""
    no_pretrained: bool = False
    """Random-init backbone on purpose (tests, synthetic data)."""
    scale_range: tuple[float, float] = (0.5, 1.5)
    """Random rescale factor of image and IR label before flip and crop (reference: 0.5-1.5)."""
    batch_size: int = 32
    epochs: int = 3
    displacement_lr_mult: float = 10.0
    """The displacement branch trains at lr x this (the edge branch at lr)."""
    path_radius: int = 10
    """Pairs within this radius on the stride-4 label map (reference: 10 on 128 x 128 = crop 512 / 4)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        ordered_range(self, "scale_range")
        positive(self, "displacement_lr_mult")
        at_least(self, 1, "path_radius")


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
    scale_background: bool = False
    """Multiply the background map by ``cam.background_scale`` (the calibrated scale the stage-1 labels use)
    before the walk; off: the maps as they are, as SIPE/AE-SIPE walk them."""
    pad_to_crop: bool = True
    """Zero-pad images up to irn.crop_size for the edge map, as SIPE/AE-SIPE's inference does."""
    method: Literal["auto", "sparse", "window", "dense"] = "auto"
    """How to apply the transition (same labels): sparse = CSR product, window = shifted slices (both
    linear memory), dense = the reference (HW)^2 matrix; auto = sparse on CUDA, window on CPU."""

    def __post_init__(self) -> None:
        positive(self, "beta", "power")
        at_least(self, 0, "exp_times")
        at_least(self, 1, "radius")


@dataclass(frozen=True)
class SegConfig(SolverConfig):
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
    """Split to train on (None: data.train_split)."""
    scale_range: tuple[float, float] = (0.5, 2.0)
    """Random rescale factor of image and label before flip, jitter and crop."""
    color_jitter: float = 0.2
    """Brightness, contrast and saturation each scaled by a random factor in [1 - j, 1 + j]."""
    epochs: int = 30
    head_lr_mult: float = 10.0
    """The ASPP head trains at lr x this."""
    checkpoint_every: int = 500
    log_every: int = 20
    test_scales: tuple[float, ...] = (1.0,)
    """eval-seg: test-time scales (softmax averaged)."""
    test_flip: bool = False
    """eval-seg: also average the horizontal flip."""
    test_crf: bool = False
    """eval-seg: dense CRF on the averaged probabilities."""

    def __post_init__(self) -> None:
        super().__post_init__()
        ordered_range(self, "scale_range")
        positive(self, "head_lr_mult", "test_scales")
        non_empty(self, "test_scales")
        if not 0 <= self.color_jitter < 1:
            raise FieldError("color_jitter", f"must lie in [0, 1), got {self.color_jitter!r}")
