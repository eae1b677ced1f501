"""eval-seg: judge the trained segmenter on a split with ground truth; judge label folders too.

Prediction per image: softmax of the logits at every ``seg.test_scales`` (image resized bilinearly),
with the horizontal flip averaged in when ``seg.test_flip``; probabilities resized to the image and
averaged over scales; optionally a dense CRF with those probabilities as unary (``seg.test_crf``, the
pairwise terms of the ``crf`` section); argmax. Metrics from ``aesipe.train.metrics`` (void ignored).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from aesipe import crf as crf_ops
from aesipe.config import RunConfig
from aesipe.models.inference import for_inference
from aesipe.utils.atomic import atomic_write_text
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import load_label_png

from .. import engine
from ..metrics import ConfusionMatrix, format_table
from ..runconfig import save_run_config
from . import reads
from .seg import load_segmenter

EVAL_FILE = "seg_eval.json"
LABEL_EVAL_FILE = "seg_labels_eval.json"


@torch.no_grad()
def predict_probabilities(
    model: torch.nn.Module, image: torch.Tensor, scales: Sequence[float], flip: bool
) -> torch.Tensor:
    """Normalised image [3, H, W] -> class probabilities [1 + C, H, W] averaged over scales (and flip)."""
    height, width = image.shape[-2:]
    total = None
    for scale in scales:
        x = image[None]
        if scale != 1.0:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        batch = torch.cat([x, x.flip(-1)]) if flip else x
        probs = model(batch).float().softmax(dim=1)
        probs = (probs[0] + probs[1].flip(-1)) / 2 if flip else probs[0]
        if scale != 1.0:
            probs = F.interpolate(probs[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        total = probs if total is None else total + probs
    return total / len(scales)


def _checked_dataset(cfg: RunConfig, split: str):
    from aesipe.data import open_dataset

    ds = open_dataset(cfg.data, split)
    if not ds.has_masks:
        raise UserError(f"split {split!r} of {ds.root} has no ground-truth masks for every image: cannot evaluate")
    return ds


def _result(ds, matrix: ConfusionMatrix, **settings) -> dict:
    return {"split": ds.split, "num_images": len(ds), **settings, **matrix.summary()}


def evaluate_segmenter(
    cfg: RunConfig, split: str | None = None, checkpoint: str | Path | None = None, progress: bool = True
) -> dict:
    """mIoU etc. of ``seg/final.pt`` on ``split`` (default ``data.eval_split``)."""
    from tqdm import tqdm

    from aesipe.data.transforms import to_tensor

    split = split or cfg.data.eval_split
    s = cfg.seg
    if s.test_crf:
        crf_ops.require_pydensecrf()
    if not s.test_scales or min(s.test_scales) <= 0:
        raise UserError(f"seg.test_scales must be positive numbers, not {s.test_scales}")
    model, class_names = load_segmenter(cfg, checkpoint)
    ds = _checked_dataset(cfg, split)
    if list(ds.class_names) != class_names:
        raise UserError(f"the segmenter's classes {class_names} differ from the dataset's {list(ds.class_names)}")
    device = engine.select_device(cfg.runtime.device)
    model = for_inference(model).to(device)
    save_run_config(cfg)
    matrix = ConfusionMatrix(ds.class_names)
    for image_id in tqdm(ds.ids, desc=f"eval-seg {split}", disable=not progress, dynamic_ncols=True):
        image = ds.load_image(image_id)
        probs = predict_probabilities(model, to_tensor(image).to(device), s.test_scales, s.test_flip).cpu().numpy()
        pred = crf_ops.crf_from_probabilities(image, probs, cfg.crf) if s.test_crf else probs.argmax(axis=0)
        matrix.update(ds.load_mask(image_id), pred)
    return _result(ds, matrix, test_scales=list(s.test_scales), test_flip=s.test_flip, test_crf=s.test_crf)


def evaluate_label_dir(cfg: RunConfig, label_dir: Path, split: str, progress: bool = True) -> dict:
    """mIoU of the label PNGs in ``label_dir`` against the ground truth of ``split`` (255 counts as background)."""
    from tqdm import tqdm

    ds = _checked_dataset(cfg, split)
    missing = [i for i in ds.ids if not (label_dir / f"{i}.png").is_file()]
    if missing:
        raise UserError(f"{len(missing)} of {len(ds)} images of split {split!r} have no label in {label_dir}")
    matrix = ConfusionMatrix(ds.class_names)
    for image_id in tqdm(ds.ids, desc=f"eval {label_dir.parent.name} {split}", disable=not progress, leave=False):
        labels = load_label_png(label_dir / f"{image_id}.png")
        matrix.update(ds.load_mask(image_id), np.where(labels == 255, 0, labels))
    return _result(ds, matrix, labels=str(label_dir))


def describe(result: dict, what: str) -> str:
    return format_table(result, f"{what}: {result['split']} ({result['num_images']} images)")


def save_eval(cfg: RunConfig, result: dict, name: str = EVAL_FILE) -> Path:
    path = Path(cfg.run_dir) / name
    atomic_write_text(path, json.dumps({"format": "aesipe-seg-eval", "version": 1, **result}, indent=1) + "\n")
    return path


@reads()
def run_eval_seg_labels(cfg: RunConfig) -> dict:
    """The pipeline's ``eval-seg-labels``: the random-walk labels of ``data.cam_split``."""
    from .random_walk import seg_label_dir

    result = evaluate_label_dir(cfg, seg_label_dir(cfg, cfg.data.cam_split), cfg.data.cam_split)
    print(describe(result, "random-walk pseudo-labels"))
    save_eval(cfg, result, LABEL_EVAL_FILE)
    return {"miou": result["miou"], "split": cfg.data.cam_split}


@reads("data.eval_split", "data.cam_split", "seg.test_scales", "seg.test_flip", "seg.test_crf",
       when={"crf": "seg.test_crf"})
def run_eval_seg(cfg: RunConfig) -> dict:
    """The pipeline's ``eval-seg``; also on ``data.cam_split`` when that differs, so the segmenter is compared
    like for like with the labels it learned from (``pipeline_summary.regression_lines``)."""
    result = evaluate_segmenter(cfg)
    print(describe(result, "DeepLabV3"))
    save_eval(cfg, result)
    metrics = {"miou": result["miou"], "split": cfg.data.eval_split}
    if cfg.data.cam_split != cfg.data.eval_split:
        try:
            metrics["miou_on_labels_split"] = evaluate_segmenter(cfg, cfg.data.cam_split)["miou"]
            metrics["labels_split"] = cfg.data.cam_split
        except UserError:  # that split has no masks
            pass
    return metrics
