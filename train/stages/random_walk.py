"""make-seg-labels: IRN's random walk turns the stage-1 maps into the segmenter's pseudo-labels.

Per image (as SIPE / AE-SIPE's ``make_seg_labels``): the IRN edge map of the image and its flip
(stride 4); the maps (background included; with ``random_walk.scale_background`` the background times
``cam.background_scale``) resized to the edge map (bilinear) and raised to
``random_walk.power``; the random walk (``aesipe.train.propagation``, radius 5, beta 10, 2^8 steps);
upsampled x4 (bilinear), cropped to the image, divided by the global max, argmax -> label values.
``<run>/seg_labels/<split>/<id>.png`` palette PNGs; resumable (finished PNGs are kept while the
settings stay the same) and each written atomically.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aesipe.config import RandomWalkConfig, RunConfig
from aesipe.models.inference import for_inference
from aesipe.pseudo_labels import scale_background
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import save_label_png

from .. import engine
from ..output_folders import file_identity
from ..propagation import propagate, propagate_dense
from ..runconfig import save_run_config
from . import pipeline_splits, reads, seg_train_split
from .evaluate import cam_dir, cam_paths, load_cam_file
from .irn import irn_dir, load_irn
from .label_folders import prepare_label_dir

LABEL_DIR = "seg_labels"


def seg_label_dir(cfg: RunConfig, split: str) -> Path:
    return Path(cfg.run_dir) / LABEL_DIR / split


def walk_maps(maps: torch.Tensor, edge: torch.Tensor, rw: RandomWalkConfig) -> torch.Tensor:
    """Maps [K, H, W] at image size + edge map [h, w] -> walked maps [K, 4h, 4w] cropped to [K, H, W]."""
    height, width = maps.shape[1:]
    small = F.interpolate(maps[None], size=edge.shape, mode="bilinear", align_corners=False)[0]
    small = small.pow(rw.power)
    if rw.method == "dense":
        walked = propagate_dense(small, edge, rw.radius, rw.beta, rw.exp_times)
    else:
        walked = propagate(small, edge, rw.radius, rw.beta, rw.exp_times, method=rw.method)
    up = F.interpolate(walked[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :height, :width]
    return up / up.max().clamp_min(torch.finfo(up.dtype).tiny)


def labels_from_walk(maps: np.ndarray, classes: np.ndarray, edge: torch.Tensor, rw: RandomWalkConfig,
                     background_scale: float = 1.0) -> np.ndarray:
    """uint8 label values [H, W] of one image (``classes`` maps channels to label values); the background
    map is multiplied by ``background_scale`` first (``random_walk.scale_background``)."""
    tensor = torch.from_numpy(scale_background(maps, background_scale)).to(edge.device)
    if rw.background_threshold is None:
        scores = walk_maps(tensor, edge, rw)
    elif len(classes) == 1:  # no foreground class to walk: all background
        return np.zeros(maps.shape[1:], np.uint8)
    else:  # IRN: walk the foreground only; a constant background score competes after normalising
        walked = walk_maps(tensor[1:], edge, rw)
        scores = F.pad(walked, (0, 0, 0, 0, 1, 0), value=rw.background_threshold)
    return np.asarray(classes, np.uint8)[scores.argmax(dim=0).cpu().numpy()]


def walk_background_scale(cfg: RunConfig) -> float:
    """What the background map is multiplied by before the walk (``random_walk.scale_background``)."""
    return cfg.cam.background_scale if cfg.random_walk.scale_background else 1.0


def _settings(cfg: RunConfig, pad_to: int | None) -> dict:
    return {
        "kind": "seg_labels",
        "random_walk": asdict(cfg.random_walk),
        "background_scale": walk_background_scale(cfg),
        "map": cfg.cam.map,
        "edge_pad_to": pad_to,
        # A retrained IRN makes other labels: the folder is remade when its checkpoint changes.
        "irn_checkpoint": file_identity(irn_dir(cfg) / "final.pt"),
    }


def make_seg_labels(cfg: RunConfig, split: str | None = None, progress: bool = True) -> Path:
    """Write ``seg_labels/<split>/<id>.png`` (default split: the segmenter's training split)."""
    from tqdm import tqdm

    from aesipe.data import open_dataset
    from aesipe.data.transforms import to_tensor

    split = split or seg_train_split(cfg)
    ds = open_dataset(cfg.data, split)
    cams = cam_paths(cfg, ds, split)
    model, trained = load_irn(cfg)
    device = engine.select_device(cfg.runtime.device)
    model = for_inference(model).to(device)
    pad_to = trained.irn.crop_size if cfg.random_walk.pad_to_crop else None
    out_dir = seg_label_dir(cfg, split)
    save_run_config(cfg)
    prepare_label_dir(out_dir, _settings(cfg, pad_to), cam_dir(cfg, split))
    todo = [i for i in ds.ids if not (out_dir / f"{i}.png").is_file()]
    for image_id in tqdm(todo, desc=f"make-seg-labels {split}", disable=not progress, dynamic_ncols=True):
        image = ds.load_image(image_id)
        classes, maps = load_cam_file(cams[image_id], "maps", cfg.cam.map)
        if maps.shape[1:] != image.shape[:2]:
            raise UserError(f"{cams[image_id]}: maps are {maps.shape[2]}x{maps.shape[1]} but the image is "
                            f"{image.shape[1]}x{image.shape[0]} (WxH)")  # fmt: skip
        edge = model.edge_probabilities(to_tensor(image).to(device), pad_to=pad_to)
        labels = labels_from_walk(maps, classes, edge, cfg.random_walk, walk_background_scale(cfg))
        save_label_png(out_dir / f"{image_id}.png", labels, ds.palette)
    return out_dir


@reads("random_walk", "cam.map", when={"cam.background_scale": "random_walk.scale_background"})
def run_make_seg_labels(cfg: RunConfig) -> dict:
    """The pipeline's ``make-seg-labels``: the segmenter's training split and the split pseudo-labels are judged on."""
    for split in pipeline_splits(cfg, "seg", "cam"):
        make_seg_labels(cfg, split)
    return {}
