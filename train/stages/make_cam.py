"""make-cam: multi-scale + flip maps of the stage-1 network for every image of a split.

For each scale the image is resized (bicubic, like the reference), the network's maps are made with the
image's tags (flip-fused inside ``AESIPENet.maps``), resized to the image (bilinear), summed over scales
and divided by their per-channel max (+1e-5). Only the image's own classes and the background are kept.

``<run>/cams/<split>/<id>.npz`` (float16, written atomically; existing files are skipped, so a re-run
resumes): ``classes`` int64 [K] (0 first), ``maps`` [K, H, W] = the map ``cam.map`` picks,
``cam`` [K, H, W] the plain CAM (its background is the network's: 1 - max over *all* classes' CAMs),
``iscam`` [K, H, W] and, for a model with affinity enhancement, ``aeiscam`` [K, H, W] -- so eval can
judge every map of one run.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from aesipe.config import from_dict
from aesipe.models.aesipe_net import build_aesipe
from aesipe.utils.atomic import atomic_save
from aesipe.utils.errors import UserError

from .. import checkpoint as ckpt_io
from .. import engine
from ..config import RunConfig
from .evaluate import cam_dir
from .stage1 import final_checkpoint_path


def load_stage1_model(cfg: RunConfig, checkpoint: str | Path | None = None) -> tuple[torch.nn.Module, list[str]]:
    """The trained network in eval mode and its class names (background first).

    Weights and backbone come from the checkpoint; the inference-only switches (affinity enhancement,
    its variant, PAMR settings, IS-CAM normalisation) come from ``cfg``, so maps can be re-made with other
    settings without retraining."""
    path = Path(checkpoint) if checkpoint else final_checkpoint_path(cfg)
    if not path.is_file():
        raise UserError(f"no stage-1 checkpoint at {path}: run `aesipe-train train {cfg.run_dir}` first (or pass --checkpoint)")
    state = ckpt_io.load_checkpoint(path, kind="aesipe")
    trained = from_dict(RunConfig, state["config"])
    cfg = replace(cfg, model=replace(cfg.model, backbone=trained.model.backbone))
    class_names = list(state["class_names"])
    model = build_aesipe(cfg, len(class_names) - 1, backbone_weights=False)
    model.load_state_dict(state["model"])
    return model.eval(), class_names


def _resize_bicubic(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


@torch.no_grad()
def image_maps(
    model: torch.nn.Module, image: np.ndarray, labels: np.ndarray, scales, flip: bool, device: torch.device
) -> dict[str, np.ndarray]:
    """Fused maps of one image at its size, each [1+C, H, W] float32 max-normalised per channel."""
    from aesipe.data.transforms import to_tensor

    h, w = image.shape[:2]
    tags = torch.from_numpy(labels).to(device)[None]
    sums: dict[str, torch.Tensor] = {}
    for scale in scales:
        x = to_tensor(_resize_bicubic(image, scale))[None].to(device)
        for key, value in model.maps(x, tags, flip=flip).items():
            up = F.interpolate(value.float(), size=(h, w), mode="bilinear", align_corners=False)[0]
            sums[key] = sums[key] + up if key in sums else up
    return {k: (v / (v.amax(dim=(1, 2), keepdim=True) + 1e-5)).cpu().numpy() for k, v in sums.items()}


def cam_record(maps: dict[str, np.ndarray], labels: np.ndarray, map_key: str) -> dict[str, np.ndarray]:
    """The npz content: keep background + the image's own classes, float16."""
    keep = np.concatenate([[0], np.flatnonzero(labels > 0) + 1]).astype(np.int64)
    record = {"classes": keep, "maps": maps[map_key][keep].astype(np.float16)}
    for key in ("cam", "iscam", "aeiscam"):
        if key in maps:
            record[key] = maps[key][keep].astype(np.float16)
    return record


def make_cams(cfg: RunConfig, split: str | None = None, checkpoint: str | Path | None = None, progress: bool = True) -> Path:
    """Write the CAM files of ``split`` (default ``data.cam_split``); returns their folder."""
    from tqdm import tqdm

    from aesipe.data import open_dataset

    split = split or cfg.data.cam_split
    model, class_names = load_stage1_model(cfg, checkpoint)
    if cfg.cam.map == "aeiscam" and not model.has_ae:
        raise UserError("cam.map=aeiscam needs model.affinity_enhancement=true (or pick cam.map=iscam or cam)")
    ds = open_dataset(cfg.data, split)
    if list(ds.class_names) != class_names:
        raise UserError(f"the checkpoint's classes {class_names} differ from the dataset's {list(ds.class_names)}")
    device = engine.select_device(cfg.train.device)
    model.to(device)
    out_dir = cam_dir(cfg, split)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for i in ds.ids if not (out_dir / f"{i}.npz").is_file()]
    for image_id in tqdm(todo, desc=f"make-cam {split}", disable=not progress, dynamic_ncols=True):
        labels = ds.labels(image_id)
        maps = image_maps(model, ds.load_image(image_id), labels, cfg.cam.scales, cfg.cam.flip, device)
        record = cam_record(maps, labels, cfg.cam.map)
        atomic_save(out_dir / f"{image_id}.npz", lambda handle: np.savez(handle, **record))
    return out_dir
