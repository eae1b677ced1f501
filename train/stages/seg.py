"""Stage 3: train DeepLabV3 on the run's pseudo-labels (``aesipe-train seg``).

The usual recipe: random rescale (``seg.scale_range``), flip, colour jitter, ImageNet normalisation,
random crop (labels padded with 255), cross-entropy ignoring 255, SGD with momentum and poly decay, the
head at ``seg.head_lr_mult`` x the backbone's learning rate; AMP on CUDA, DDP under torchrun.
Writes ``<run>/seg/checkpoints/last.pt`` (resumable), ``seg/log.csv`` and ``seg/final.pt`` (kind
``deeplabv3``, with class names and the resolved config: what ``aesipe-export`` needs).

Reviewed masks (``<run>/corrections/``, ``aesipe-train corrections``) replace the pseudo-labels of their
images, always; ``corrections.seg_repeat`` draws each of them that many times per epoch.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
import torch.nn.functional as F

from aesipe.config import RUNTIME_ONLY_FIELDS, RunConfig, SegConfig, run_config_from_saved, to_dict
from aesipe.corrections import CorrectionStore
from aesipe.models.deeplab import DeepLabV3Segmenter, build_deeplabv3
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import IGNORE_INDEX

from .. import checkpointing as ckpt_io
from .. import engine, loop
from ..runconfig import save_run_config
from . import reads, seg_train_split
from .irn import backbone_weights

STAGE_DIR = "seg"
# Where each label source lives and which command makes it.
LABEL_SOURCES = {
    "seg_labels": ("seg_labels", "make-seg-labels"),
    "pseudo_labels": ("pseudo_labels", "crf"),
    "ir_labels": ("ir_labels", "ir-label"),
}


def seg_dir(cfg: RunConfig) -> Path:
    return Path(cfg.run_dir) / STAGE_DIR


def training_label_dir(cfg: RunConfig, split: str) -> Path:
    folder, command = LABEL_SOURCES[cfg.seg.label_source]
    path = Path(cfg.run_dir) / folder / split
    if not path.is_dir():
        raise UserError(f"no training labels in {path}: run `aesipe-train {command} {cfg.run_dir}` first")
    return path


def seg_losses(model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    logits = model(batch["image"])
    loss = F.cross_entropy(logits.float(), batch["label"], ignore_index=IGNORE_INDEX)
    return {"loss": loss}


def train_seg(cfg: RunConfig) -> Path:
    """Train (or resume) the segmenter; returns ``seg/final.pt``."""
    from aesipe.data import open_dataset
    from aesipe.data.imagecheck import check_training_images
    from aesipe.data.transforms import SegTrainDataset

    s = cfg.seg
    split = seg_train_split(cfg)
    labels = training_label_dir(cfg, split)
    info = engine.init_distributed(cfg.runtime.device)
    try:
        device = engine.select_device(cfg.runtime.device, info.local_rank if info.enabled else None)
        engine.seed_everything(s.seed)
        ds = open_dataset(cfg.data, split)
        check_training_images(ds, Path(cfg.run_dir), write=info.is_main)  # before step 1, not at step N
        store = CorrectionStore.of_run(cfg.run_dir)
        corrected = store.masks_for(ds)
        repeat = cfg.corrections.seg_repeat if len(store) else 1  # read while the run has corrections (@reads)
        dataset = SegTrainDataset(ds, labels, crop_size=s.crop_size, scale_range=s.scale_range, flip=True,
                                  jitter=s.color_jitter, seed=s.seed, corrected=corrected, corrected_repeat=repeat)
        if corrected and info.is_main:
            print(f"seg: {len(corrected)} of {len(ds)} images train on their reviewed masks"
                  + (f" (drawn {repeat}x)" if repeat > 1 else ""))
        model = build_deeplabv3(
            ds.num_classes, s.backbone, backbone_weights(cfg, s.backbone, s.pretrained), s.no_pretrained, s.freeze_bn
        )
        if info.enabled and device.type == "cuda" and not s.freeze_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BN statistics over all GPUs' batches
        if s.batch_size < 2 and not s.freeze_bn:
            raise UserError("seg.batch_size=1 cannot train BatchNorm (ASPP pooling sees one value): use 2+ or seg.freeze_bn=true")
        optimizer, scheduler, spec = loop.solver_setup(
            s, "seg", [model.backbone.parameters(), model.classifier.parameters()], [1.0, s.head_lr_mult], len(dataset),
            info, cfg.runtime, stage_dir=seg_dir(cfg), kind="deeplabv3", workers=cfg.data.workers,
        )
        if info.is_main:
            save_run_config(cfg)
        return loop.train_loop(model, optimizer, scheduler, dataset, seg_losses, spec, device, to_dict(cfg),
                                 ds.class_names, info)  # fmt: skip
    finally:
        engine.shutdown_distributed()


def load_segmenter(cfg: RunConfig, checkpoint: str | Path | None = None) -> tuple[DeepLabV3Segmenter, list[str]]:
    """The trained segmenter (eval mode) and its class names (background first)."""
    path = Path(checkpoint) if checkpoint else seg_dir(cfg) / ckpt_io.FINAL_NAME
    if not path.is_file():
        raise UserError(f"no segmenter checkpoint at {path}: run `aesipe-train seg {cfg.run_dir}` first")
    state = ckpt_io.load_checkpoint(path, kind="deeplabv3")
    trained = run_config_from_saved(state["config"])
    class_names = list(state["class_names"])
    model = build_deeplabv3(len(class_names) - 1, trained.seg.backbone, no_pretrained=True)
    model.load_state_dict(state["model"])
    return model.eval(), class_names


SEG_TRAINING_FIELDS = tuple(f"seg.{f.name}" for f in fields(SegConfig)
                            if not f.name.startswith("test_") and f.name not in RUNTIME_ONLY_FIELDS)
"""What training the segmenter reads of its section: all but the test-time settings (``eval-seg``'s) and
what only changes how fast it runs."""


@reads(*SEG_TRAINING_FIELDS, "runtime.amp", when={"corrections.seg_repeat": "corrections"})
def run_seg(cfg: RunConfig) -> dict:
    """The pipeline's ``seg``."""
    train_seg(cfg)
    return {}
