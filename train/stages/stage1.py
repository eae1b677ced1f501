"""Stage 1: train the AE-SIPE network on image-level tags (``aesipe-train train``).

Writes ``<run>/stage1/checkpoints/last.pt`` every ``train.checkpoint_every`` steps (a re-run resumes
from it), ``<run>/stage1/log.csv`` and finally ``<run>/stage1/final.pt``. No checkpoint is ever chosen
by a score: the final one is the result.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from aesipe.config import RunConfig, to_dict
from aesipe.models import sipe_modules as sm
from aesipe.models.aesipe_net import build_aesipe

from .. import engine, loop
from ..runconfig import save_run_config
from . import reads

STAGE_DIR = "stage1"


def stage1_dir(cfg: RunConfig) -> Path:
    return Path(cfg.run_dir) / STAGE_DIR


def final_checkpoint_path(cfg: RunConfig) -> Path:
    return stage1_dir(cfg) / "final.pt"


def stage1_losses(model: torch.nn.Module, batch: dict, gsc_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """cls = multilabel soft margin on the GAP scores; GSC = mean |CAM - maxnorm((AE-)IS-CAM)|."""
    out = model(batch["image"], batch["labels"], batch["valid"])
    cls = F.multilabel_soft_margin_loss(out["score"].float(), batch["labels"].float())
    gsc = sm.gsc_loss(out["cam"].float(), out["final"].float())
    return {"loss": cls + gsc_weight * gsc, "loss_cls": cls, "loss_gsc": gsc}


def train_stage1(cfg: RunConfig) -> Path:
    """Train (or resume) the stage-1 network of ``cfg``; returns the final checkpoint path."""
    from aesipe.data import open_dataset
    from aesipe.data.transforms import ClassificationDataset

    t = cfg.train
    info = engine.init_distributed(cfg.runtime.device)
    try:
        device = engine.select_device(cfg.runtime.device, info.local_rank if info.enabled else None)
        engine.seed_everything(t.seed)
        ds = open_dataset(cfg.data, cfg.data.train_split)
        dataset = ClassificationDataset(ds, crop_size=t.crop_size, resize_long=t.resize_long, flip=True, seed=t.seed)
        model = build_aesipe(cfg, ds.num_classes)
        optimizer, scheduler, spec = loop.solver_setup(
            t, "train", model.parameter_groups(), [1.0, t.new_layer_lr_mult], len(ds), info, cfg.runtime,
            stage_dir=stage1_dir(cfg), kind="aesipe", workers=cfg.data.workers, grad_clip=t.grad_clip,
        )
        if info.is_main:
            save_run_config(cfg)
        return loop.train_loop(
            model, optimizer, scheduler, dataset,
            lambda net, batch: stage1_losses(net, batch, t.gsc_weight),
            spec, device, to_dict(cfg), ds.class_names, info,
        )
    finally:
        engine.shutdown_distributed()


def import_authors_checkpoint(cfg: RunConfig, source: str | Path) -> tuple[Path, str]:
    """Convert the authors' SIPE/AE-SIPE file into ``<run>/stage1/final.pt``; returns (path, report).

    Class names come from the run's dataset when it opens, else VOC's when the file has 20 classes.
    The run config's backbone is set to the one the file holds."""
    from dataclasses import replace

    from aesipe.data import VOC_CLASSES, open_dataset
    from aesipe.models import import_authors
    from aesipe.utils.errors import UserError

    from .. import checkpointing as ckpt_io

    report = import_authors.convert_authors_state_dict(import_authors.read_authors_state_dict(source))
    try:
        class_names = list(open_dataset(cfg.data, cfg.data.cam_split).class_names)
    except UserError:
        if report.num_classes != len(VOC_CLASSES) - 1:
            raise UserError(
                f"the file has {report.num_classes} classes and the run's dataset ({cfg.data.root}) does not open: "
                "pass data.root=DATASET so the class names are known"
            ) from None
        class_names = list(VOC_CLASSES)
    if len(class_names) - 1 != report.num_classes:
        raise UserError(f"the file has {report.num_classes} classes, the dataset {len(class_names) - 1}")
    cfg = replace(cfg, model=replace(cfg.model, backbone=report.backbone))
    model = build_aesipe(cfg, report.num_classes, backbone_weights=False)
    import_authors.check_against(report, model)
    model.load_state_dict(report.state_dict, strict=True)
    save_run_config(cfg)
    ckpt = ckpt_io.make_checkpoint(
        kind="aesipe", model=model, config=to_dict(cfg), class_names=class_names,
        extra={"imported_from": str(Path(source).resolve())},
    )
    return ckpt_io.write_final(final_checkpoint_path(cfg), ckpt), report.summary()


@reads("data.root", "data.kind", "data.train_split", "data.labels_csv", "model", "train", "runtime.amp")
def run_train(cfg: RunConfig) -> dict:
    """The pipeline's ``train`` stage."""
    train_stage1(cfg)
    return {}
