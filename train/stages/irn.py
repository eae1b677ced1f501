"""Stage 2: train IRN (class boundaries + displacements) on the IR labels (``aesipe-train irn``).

Samples follow the reference: random rescale of image and IR label (``irn.scale_range``), flip,
normalise, random crop (image padded with 0, label with 255); the label is reduced to the stride-4 size
with nearest neighbour and turned into pair labels by ``PathIndex.affinity_labels``. Only the two
branches train (edge at ``irn.lr``, displacement at ``irn.lr * irn.displacement_lr_mult``) with poly
decay. Writes ``<run>/irn/checkpoints/last.pt`` (resumable), ``irn/log.csv`` and ``irn/final.pt``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aesipe.config import RunConfig, run_config_from_saved, to_dict
from aesipe.models.irn import IRNet, build_irn, irn_losses
from aesipe.models.path_index import PathIndex, path_index
from aesipe.utils.errors import UserError

from .. import checkpointing as ckpt_io
from .. import engine, loop
from ..runconfig import save_run_config
from . import reads

STAGE_DIR = "irn"


def irn_dir(cfg: RunConfig) -> Path:
    return Path(cfg.run_dir) / STAGE_DIR


def ir_label_dir(cfg: RunConfig, split: str) -> Path:
    return Path(cfg.run_dir) / "ir_labels" / split


def feature_size(crop_size: int) -> int:
    """Side of the stride-4 maps of a crop (conv/pool stride 2 twice, rounding up)."""
    return (crop_size + 3) // 4


class AffinityDataset(torch.utils.data.Dataset):
    """Image crops with IRN pair labels: dict(image, bg_pos, fg_pos, neg) (pair labels uint8 [D, n])."""

    def __init__(self, base: torch.utils.data.Dataset, index: PathIndex):
        self.base, self.index = base, index

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: int) -> dict:
        sample = self.base[item]
        label = sample["label"].numpy().astype(np.uint8)
        side = feature_size(label.shape[0])
        small = np.asarray(Image.fromarray(label).resize((side, side), Image.NEAREST))
        bg_pos, fg_pos, neg = self.index.affinity_labels(small)
        as_bytes = lambda a: torch.from_numpy(a.astype(np.uint8))  # noqa: E731  (4x less to collate)
        return {"image": sample["image"], "bg_pos": as_bytes(bg_pos), "fg_pos": as_bytes(fg_pos), "neg": as_bytes(neg)}


def irn_batch_losses(model: torch.nn.Module, batch: dict, index: PathIndex) -> dict[str, torch.Tensor]:
    edge, disp = model(batch["image"])
    labels = [batch[k].float() for k in ("bg_pos", "fg_pos", "neg")]
    return irn_losses(edge, disp, *labels, index)


def backbone_weights(cfg: RunConfig, name: str, explicit: str | None) -> str | None:
    """The stage's own weights file, else stage 1's when it is the same architecture."""
    if explicit:
        return explicit
    return cfg.model.pretrained if cfg.model.backbone == name else None


def check_crop(cfg: RunConfig) -> PathIndex:
    index = path_index(cfg.irn.path_radius)
    side = feature_size(cfg.irn.crop_size)
    if side - 2 * index.radius_floor < 1:
        raise UserError(
            f"irn.crop_size={cfg.irn.crop_size} gives {side}x{side} label maps, too small for irn.path_radius="
            f"{cfg.irn.path_radius} (needs crop_size >= {4 * (2 * index.radius_floor + 1)})"
        )
    return index


def train_irn(cfg: RunConfig) -> Path:
    """Train (or resume) IRN on ``ir_labels/<data.train_split>``; returns ``irn/final.pt``."""
    from aesipe.data import open_dataset
    from aesipe.data.transforms import SegTrainDataset

    c = cfg.irn
    index = check_crop(cfg)
    split = cfg.data.train_split
    labels = ir_label_dir(cfg, split)
    if not labels.is_dir():
        raise UserError(f"no IR labels in {labels}: run `aesipe-train ir-label {cfg.run_dir}` first")
    info = engine.init_distributed(cfg.runtime.device)
    try:
        device = engine.select_device(cfg.runtime.device, info.local_rank if info.enabled else None)
        engine.seed_everything(c.seed)
        ds = open_dataset(cfg.data, split)
        crops = SegTrainDataset(ds, labels, crop_size=c.crop_size, scale_range=c.scale_range, flip=True, jitter=0.0,
                                seed=c.seed)
        dataset = AffinityDataset(crops, index)
        model = build_irn(c.backbone, backbone_weights(cfg, c.backbone, c.pretrained), c.no_pretrained)
        optimizer, scheduler, spec = loop.solver_setup(
            c, "irn", model.trainable_parameters(), [1.0, c.displacement_lr_mult], len(ds), info, cfg.runtime,
            stage_dir=irn_dir(cfg), kind="irn", workers=cfg.data.workers,
        )
        if info.is_main:
            save_run_config(cfg)
        return loop.train_loop(
            model, optimizer, scheduler, dataset, lambda net, batch: irn_batch_losses(net, batch, index),
            spec, device, to_dict(cfg), ds.class_names, info,
        )
    finally:
        engine.shutdown_distributed()


def load_irn(cfg: RunConfig, checkpoint: str | Path | None = None) -> tuple[IRNet, RunConfig]:
    """The trained IRN (eval mode) and the config it was trained with."""
    path = Path(checkpoint) if checkpoint else irn_dir(cfg) / ckpt_io.FINAL_NAME
    if not path.is_file():
        raise UserError(f"no IRN checkpoint at {path}: run `aesipe-train irn {cfg.run_dir}` first")
    state = ckpt_io.load_checkpoint(path, kind="irn")
    trained = run_config_from_saved(state["config"])
    model = build_irn(trained.irn.backbone, no_pretrained=True)
    model.load_state_dict(state["model"])
    return model.eval(), trained


@reads("irn", "runtime.amp")
def run_irn(cfg: RunConfig) -> dict:
    """The pipeline's ``irn``."""
    train_irn(cfg)
    return {}
