"""The run configuration: one frozen dataclass per section, defaults = the authors' effective recipe.

Every switch of ``docs/method.md`` is a field here, so each row of the paper's Tables 2 and 3 is one config
(see ``configs/``). Load with ``aesipe.config.load_config(RunConfig, recipe, overrides)``; the resolved
config is written to ``<run>/config.toml`` and stored inside every checkpoint, and read back with
``run_config_from_saved`` (which upgrades what older versions wrote). Stdlib only: the torch-free
labelling side may import it.

The three training stages share one section type, ``SolverConfig`` (optimiser, schedule, seed,
checkpointing); where and how they run (device, mixed precision) is set once, in ``runtime``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .loading import ConfigError, FieldError, from_dict

Backbone = Literal["resnet50", "resnet101", "mobilenet_v2"]
SCHEMA_VERSION = 2
"""Layout version written into every saved config. 1 = aesipe 0.1 (no ``schema`` key)."""

PAPER_LR = 0.01
"""Backbone lr of the paper (new layers x10) with momentum 0.9: about the effective step of the code."""
REFERENCE_LR = 0.1
"""Backbone lr of the authors' code, which trains with momentum 1e-4 (see ``reference_optimizer``)."""


# ------------------------------------------------------------------ validation helpers
def _at_least(obj: Any, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < minimum:
            raise FieldError(name, f"must be at least {minimum:g}, got {value!r}")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        values = value if isinstance(value, tuple) else (value,)
        if any(v is not None and v <= 0 for v in values):
            raise FieldError(name, f"must be positive, got {value!r}")


def _non_empty(obj: Any, *names: str) -> None:
    for name in names:
        if not getattr(obj, name):
            raise FieldError(name, "must list at least one value")


def _ordered_range(obj: Any, name: str) -> None:
    low, high = getattr(obj, name)
    if not 0 < low <= high:
        raise FieldError(name, f"must be [low, high] with 0 < low <= high, got {[low, high]}")


# ------------------------------------------------------------------ sections
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

    def __post_init__(self) -> None:
        _at_least(self, 0, "workers")


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
    """PAMR iterations (the affinity enhancement's refinement, and cam.pamr's)."""
    pamr_dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)
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
        _at_least(self, 0, "pamr_iters")
        _non_empty(self, "pamr_dilations")
        _positive(self, "pamr_dilations", "background_seed_scale")


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

    def __post_init__(self) -> None:
        _at_least(self, 1, "batch_size", "epochs", "max_steps", "checkpoint_every", "log_every")
        _at_least(self, 16, "crop_size")
        _positive(self, "lr")
        _at_least(self, 0, "weight_decay", "poly_power")
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
        _ordered_range(self, "resize_long")
        _positive(self, "new_layer_lr_mult")
        _at_least(self, 0, "grad_clip", "gsc_weight")


@dataclass(frozen=True)
class CamConfig:
    """Stage-1 inference (make-cam) and pseudo-label judging (eval-cam)."""

    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    """Test-time scales; each scale's maps are resized to the image and summed."""
    flip: bool = True
    """Fuse each scale with its mirror inside the network (logits and features summed)."""
    map: Literal["cam", "iscam", "aeiscam"] = "aeiscam"
    """Which map becomes the pseudo-label: plain CAM, SIPE's IS-CAM or AE-SIPE's AE-IS-CAM."""
    background_scale: float = 0.8
    """Background channel multiplier before argmax (SIPE: 1.0). ``aesipe-train calibrate`` sets it from masks."""
    sweep: tuple[float, ...] = ()
    """Optional background scales to sweep in eval-cam."""
    pamr: Literal["off", "per_scale", "fused"] = "off"
    """PAMR refinement of the final maps, made the same way by make-cam and the exported pseudo-labeller:
    off; per_scale = each scale's maps on the image at 1/4 of that scale's size; fused = the maps summed
    over scales, once, on the image at 1/4 size. Settings: model.pamr_iters / pamr_dilations."""
    batch_size: int = 1

    def __post_init__(self) -> None:
        _non_empty(self, "scales")
        _positive(self, "scales", "background_scale", "sweep")
        _at_least(self, 1, "batch_size")


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
        _at_least(self, 1, "iterations")
        _at_least(self, 0, "workers")
        if not 0 < self.gt_prob < 1:
            raise FieldError("gt_prob", f"must lie in (0, 1), got {self.gt_prob!r}")


@dataclass(frozen=True)
class IrLabelConfig:
    fg_background_scale: float = 1.0
    """fg_conf = CRF(argmax of the maps as they are)."""
    bg_background_scale: float = 0.8
    """bg_conf = CRF(argmax with background x 0.8)."""
    workers: int = 2
    """CRF worker processes."""

    def __post_init__(self) -> None:
        _positive(self, "fg_background_scale", "bg_background_scale")
        _at_least(self, 0, "workers")


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
        _ordered_range(self, "scale_range")
        _positive(self, "displacement_lr_mult")
        _at_least(self, 1, "path_radius")


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

    def __post_init__(self) -> None:
        _positive(self, "beta", "power")
        _at_least(self, 0, "exp_times")
        _at_least(self, 1, "radius")


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
        _ordered_range(self, "scale_range")
        _positive(self, "head_lr_mult", "test_scales")
        _non_empty(self, "test_scales")
        if not 0 <= self.color_jitter < 1:
            raise FieldError("color_jitter", f"must lie in [0, 1), got {self.color_jitter!r}")


# ------------------------------------------------------------------ upgrading older layouts
MOVED_KEYS: dict[str, str] = {
    f"{section}.{name}": f"runtime.{name}"
    for section in ("train", "irn", "seg", "random_walk")
    for name in (("device",) if section == "random_walk" else ("device", "amp"))
}
"""Keys of aesipe 0.1 and where they live now: the per-stage devices and AMP flags became ``runtime``'s."""

ADDED_SINCE_0_1: dict[str, Any] = {
    "model.freeze_bn_affine": True, "model.mask_ae_seeds": True, "model.ae_align_corners": False,
    "seg.reference_optimizer": False, "cam.pamr": "off",
}
"""Fields aesipe 0.1 did not have, with the value that means what 0.1 did: a saved 0.1 config (which
does not write them) gets these, since its checkpoints were trained that way."""


_RUNTIME_DEFAULTS = {"device": "auto", "amp": "true"}


def move_legacy_keys(data: dict[str, Any], source: str = "config", strict: bool = True) -> dict[str, Any]:
    """Move aesipe 0.1's keys (``train.device`` ...) to ``runtime``. Values other than the default must
    agree (``strict``; a saved config takes the first stage's instead, as that is what it was trained on)."""
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()}
    found: dict[str, list[tuple[str, Any]]] = {}
    for old, new in MOVED_KEYS.items():
        section, name = old.split(".")
        if isinstance(out.get(section), dict) and name in out[section]:
            found.setdefault(new, []).append((old, out[section].pop(name)))
    for new, items in found.items():
        section, name = new.split(".")
        runtime = out.setdefault(section, {})
        chosen = [(key, value) for key, value in items if str(value).lower() != _RUNTIME_DEFAULTS[name]]
        if name in runtime:
            chosen.insert(0, (new, runtime[name]))
        if strict:
            differing = {str(value).lower() for _, value in chosen}
            if len(differing) > 1:
                listed = ", ".join(f"{key}={value!r}" for key, value in chosen)
                raise ConfigError(f"{new} is set to different values in {source}: {listed} (it is now set once)")
        if chosen:
            runtime[name] = chosen[0][1]
    return out


def upgrade_saved(data: dict[str, Any]) -> dict[str, Any]:
    """A config as an older aesipe saved it (config.toml, checkpoint["config"]) in today's layout."""
    data = move_legacy_keys(data, "a saved config", strict=False)
    if int(data.get("schema", 1)) < 2:
        for dotted, value in ADDED_SINCE_0_1.items():
            section, name = dotted.split(".")
            data.setdefault(section, {}).setdefault(name, value)
        data["schema"] = SCHEMA_VERSION
    return data


@dataclass(frozen=True)
class RunConfig:
    """Everything a run directory was made with (``<run>/config.toml``)."""

    __config_aliases__: ClassVar[dict[str, str]] = MOVED_KEYS
    __config_upgrade__: ClassVar = staticmethod(move_legacy_keys)

    run_dir: str = "runs/default"
    """The run directory (set from the command line: RUN_DIR)."""
    schema: int = SCHEMA_VERSION
    """Config layout version (written by this aesipe; saved configs without it are aesipe 0.1's)."""
    data: DataConfig = field(default_factory=DataConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    crf: CrfConfig = field(default_factory=CrfConfig)
    ir_label: IrLabelConfig = field(default_factory=IrLabelConfig)
    irn: IrnConfig = field(default_factory=IrnConfig)
    random_walk: RandomWalkConfig = field(default_factory=RandomWalkConfig)
    seg: SegConfig = field(default_factory=SegConfig)


def read_run_config(path) -> RunConfig:
    """A run directory's ``config.toml`` (any aesipe version's); a broken file is one ConfigError line."""
    import tomllib
    from pathlib import Path

    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return run_config_from_saved(data)


def run_config_from_saved(data: dict[str, Any]) -> RunConfig:
    """The ``RunConfig`` a saved config (``config.toml``, ``checkpoint["config"]``) describes, whichever
    aesipe version wrote it."""
    return from_dict(RunConfig, upgrade_saved(data))
