"""make-cam: multi-scale + flip maps of the stage-1 network for every image of a split.

The maps are ``aesipe.models.pseudo_maps.fused_maps`` (the same function the exported pseudo-labeller runs):
per ``cam.scales`` the image is resized (bicubic), the network makes its maps with the image's tags
(``cam.flip`` fuses the mirror inside the network), optionally refined with PAMR (``cam.pamr``), resized to
the image (bilinear) and summed; ``aesipe.pseudo_labels`` then divides by the per-channel max (+1e-5) and
keeps the background and the image's own classes.

``<run>/cams/<split>/<id>.npz`` (float16, written atomically): ``classes`` int64 [K] (0 first), ``maps``
[K, H, W] = the map ``cam.map`` picks, ``cam`` [K, H, W] the plain CAM (its background is the network's:
1 - max over *all* classes' CAMs), ``iscam`` [K, H, W] and, for a model with affinity enhancement,
``aeiscam`` [K, H, W] -- so eval can judge every map of one run, and a map chosen later (``calibrate``
sets ``cam.map``) is read from the same files -- and ``fallback_<key>`` bool [K] (``fallback_maps`` for
``maps``): the tagged classes whose map was zero everywhere and now hold their pre-ReLU CAM
(``cam.zero_map_fallback``). The folder remembers the checkpoint and settings it was made with
(``train/output_folders.py``): a re-run with the same ones resumes, other ones redo it.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from aesipe.config import RunConfig, run_config_from_saved
from aesipe.constants import IMAGENET_MEAN, IMAGENET_STD, PIXEL_SCALE
from aesipe.models.aesipe_net import build_aesipe
from aesipe.models.inference import for_inference
from aesipe.models.pseudo_maps import CamSettings, fused_maps
from aesipe.pseudo_labels import keep_image_classes, max_normalise
from aesipe.utils.atomic import atomic_save
from aesipe.utils.errors import UserError

from .. import checkpointing as ckpt_io
from .. import engine
from ..output_folders import file_identity, prepare_output_dir
from ..runconfig import save_run_config
from . import pipeline_splits, reads
from .evaluate import cam_dir
from .stage1 import final_checkpoint_path


def stage1_checkpoint(cfg: RunConfig, checkpoint: str | Path | None = None) -> Path:
    path = Path(checkpoint) if checkpoint else final_checkpoint_path(cfg)
    if path.is_dir():
        raise UserError(f"--checkpoint {path} is a folder: give a stage-1 checkpoint file such as "
                        f"{path / 'final.pt'}")
    if not path.is_file():
        hint = "" if checkpoint else f": run `aesipe-train train {cfg.run_dir}` first"
        raise UserError(f"no stage-1 checkpoint at {path}{hint}")
    return path


def load_stage1_model(cfg: RunConfig, checkpoint: str | Path | None = None) -> tuple[torch.nn.Module, list[str]]:
    """The trained network in eval mode and its class names (background first).

    Weights and architecture (backbone, BatchNorm kind) come from the checkpoint; the inference-only
    switches (affinity enhancement, its variant, PAMR settings, IS-CAM normalisation) come from ``cfg``,
    so maps can be re-made with other settings without retraining."""
    state = ckpt_io.load_checkpoint(stage1_checkpoint(cfg, checkpoint), kind="aesipe")
    trained = run_config_from_saved(state["config"]).model
    model_cfg = replace(cfg.model, backbone=trained.backbone, no_pretrained=trained.no_pretrained)
    class_names = list(state["class_names"])
    model = build_aesipe(replace(cfg, model=model_cfg), len(class_names) - 1, backbone_weights=False)
    model.load_state_dict(state["model"])
    return model.eval(), class_names


def map_keys(model: torch.nn.Module) -> tuple[str, ...]:
    return ("cam", "iscam", "aeiscam") if model.has_ae else ("cam", "iscam")


@torch.no_grad()
def image_maps(
    model: torch.nn.Module, image: np.ndarray, labels: np.ndarray, tt: CamSettings, device: torch.device
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fused maps of one uint8 RGB image at its size, each [1+C, H, W] float32 max-normalised per channel,
    and per map the channels [1+C] that fell back to the pre-ReLU CAM."""
    image01 = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float() * PIXEL_SCALE
    tags = torch.from_numpy(labels)[None]
    sums, fell_back = fused_maps(model, image01.to(device), tags.to(device), map_keys(model), tt, IMAGENET_MEAN,
                                 IMAGENET_STD)
    return ({key: max_normalise(value[0].cpu().numpy()) for key, value in sums.items()},
            {key: value[0].cpu().numpy() for key, value in fell_back.items()})


def cam_record(maps: dict[str, np.ndarray], labels: np.ndarray, map_key: str,
               fell_back: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The npz content: the background and the image's own classes, float16 (module docstring)."""
    classes, selected = keep_image_classes(maps[map_key], labels)
    record = {"classes": classes, "maps": selected.astype(np.float16)}
    for key in ("cam", "iscam", "aeiscam"):
        if key in maps:
            record[key] = keep_image_classes(maps[key], labels)[1].astype(np.float16)
    for key, flags in (fell_back or {}).items():
        record[f"fallback_{key}"] = np.asarray(flags, bool)[classes]
        if key == map_key:
            record["fallback_maps"] = record[f"fallback_{key}"]
    return record


def cam_folder_settings(cfg: RunConfig, checkpoint: Path) -> dict:
    """Everything that changes a CAM file (the folder is redone when any of it changes)."""
    m = cfg.model
    return {"kind": "cams", "checkpoint": str(checkpoint.resolve()), "checkpoint_file": file_identity(checkpoint),
            "test_time": CamSettings.from_config(cfg).describe() | {"pamr_backend": None},
            "model": {k: getattr(m, k) for k in (
                "affinity_enhancement", "ae_variant", "iscam_normalisation", "background_seed_scale",
                "pamr_iters", "pamr_dilations", "ae_align_corners")}}


def make_cams(cfg: RunConfig, split: str | None = None, checkpoint: str | Path | None = None, progress: bool = True,
              ids: Sequence[str] | None = None) -> Path:
    """Write the CAM files of ``split`` (default ``data.cam_split``; ``ids``: only those); returns their folder."""
    from tqdm import tqdm

    from aesipe.data import open_dataset

    split = split or cfg.data.cam_split
    path = stage1_checkpoint(cfg, checkpoint)
    model, class_names = load_stage1_model(cfg, path)
    if cfg.cam.map == "aeiscam" and not model.has_ae:
        raise UserError("cam.map=aeiscam needs model.affinity_enhancement=true (or pick cam.map=iscam or cam)")
    ds = open_dataset(cfg.data, split)
    if list(ds.class_names) != class_names:
        raise UserError(f"the checkpoint's classes {class_names} differ from the dataset's {list(ds.class_names)}")
    device = engine.select_device(cfg.runtime.device)
    model = for_inference(model).to(device)
    out_dir = cam_dir(cfg, split)
    save_run_config(cfg)
    prepare_output_dir(out_dir, cam_folder_settings(cfg, path), "*.npz")
    tt = CamSettings.from_config(cfg)
    todo = [i for i in (ds.ids if ids is None else ids) if not (out_dir / f"{i}.npz").is_file()]
    for image_id in tqdm(todo, desc=f"make-cam {split}", disable=not progress, dynamic_ncols=True):
        labels = ds.labels(image_id)
        maps, fell_back = image_maps(model, ds.load_image(image_id), labels, tt, device)
        record = cam_record(maps, labels, cfg.cam.map, fell_back)
        atomic_save(out_dir / f"{image_id}.npz", lambda handle, record=record: np.savez(handle, **record))
    return out_dir


@reads("data.cam_split", "seg.train_split", "cam.scales", "cam.flip", "cam.map", "cam.pamr", "cam.zero_map_fallback")
def run_make_cam(cfg: RunConfig) -> dict:
    """The pipeline's ``make-cam``: one pass per set of images (a folder dataset's train_aug is its train, and
    the CAM folder is shared)."""
    from aesipe.data import resolve_split

    by_images = {resolve_split(cfg.data, split): split for split in pipeline_splits(cfg, "train", "seg", "cam")}
    for split in by_images.values():
        make_cams(cfg, split)
    return {}
