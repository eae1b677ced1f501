"""calibrate: choose the background scale from a few masks the user has, and store it in the run.

The best background scale depends on the data (on MSRC the maps over-extend into grass and sky, and the
paper's 0.8 is not the best). ``calibrate`` takes ``images`` images of a split that have masks (spread
evenly over the split; 20 by default), makes their CAMs if the run has none yet, judges every scale of a
range on them (eval-cam's rule) and stores the best one in the run's config: ``cam.background_scale``
(eval-cam, the CRF pseudo-labels and the exported pseudo-labeller use it) and the IR labels' pair, with
the authors' ratio kept (bg_conf at the scale, fg_conf at scale / 0.8, at least 1.0). The choice, the
images it was made on and the whole curve go to ``<run>/calibration.json``. Judge the result on a split
the calibration did not see. With ``corrections.calibrate`` the run's reviewed masks count as masks too
(``<run>/corrections/``: a corrected image is judged on its reviewed mask), so a dataset without masks can
be calibrated on a few corrected images.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from aesipe.config import RunConfig
from aesipe.corrections import CorrectionStore
from aesipe.data import open_dataset
from aesipe.utils.atomic import atomic_write_text
from aesipe.utils.errors import UserError

from ..runconfig import save_run_config

CALIBRATION_FILE = "calibration.json"
DEFAULT_RANGE = tuple(round(0.5 + 0.05 * i, 2) for i in range(21))  # 0.5, 0.55, ..., 1.5
AUTHORS_IR_RATIO = 0.8  # the authors' IR labels: fg_conf at x1.0, bg_conf at x0.8


def spread(ids: Sequence[str], count: int) -> list[str]:
    """``count`` ids spread evenly over ``ids`` (all of them when there are fewer)."""
    if count >= len(ids):
        return list(ids)
    picks = np.linspace(0, len(ids) - 1, count).round().astype(int)
    return [ids[i] for i in dict.fromkeys(picks.tolist())]


def calibrate(cfg: RunConfig, split: str | None = None, images: int = 20, scales: Sequence[float] | None = None,
              checkpoint: str | Path | None = None, progress: bool = True) -> tuple[RunConfig, dict]:
    """Pick the background scale on ``images`` masked images of ``split``; returns (new config, record)."""
    from .evaluate import cam_dir, evaluate_cams
    from .make_cam import make_cams

    split = split or cfg.data.cam_split
    if images < 1:
        raise UserError(f"--images must be at least 1, not {images}")
    scales = tuple(float(s) for s in (scales or DEFAULT_RANGE))
    if len(scales) < 2 or min(scales) <= 0:
        raise UserError(f"calibration needs at least two positive background scales, got {list(scales)}")
    ds = open_dataset(cfg.data, split)
    corrected = CorrectionStore.of_run(cfg.run_dir).masks_for(ds) if cfg.corrections.calibrate else {}
    with_masks = [i for i in ds.ids if i in corrected or ds.mask_path(i) is not None]
    if not with_masks:
        raise UserError(f"no image of split {split!r} in {ds.root} has a mask: calibration needs a few masks")
    chosen = spread(with_masks, images)
    folder = cam_dir(cfg, split)
    if any(not (folder / f"{i}.npz").is_file() for i in chosen):
        make_cams(cfg, split, checkpoint, ids=chosen, progress=progress)  # only the CAM files still missing
    result = evaluate_cams(cfg, split, "maps", scales, ids=chosen, progress=progress, mask_paths=corrected)
    best = float(result["best_background_scale"])
    fg_scale = max(1.0, round(best / AUTHORS_IR_RATIO, 4))
    calibrated = replace(cfg, cam=replace(cfg.cam, background_scale=best),
                         ir_label=replace(cfg.ir_label, bg_background_scale=best, fg_background_scale=fg_scale))
    record = {
        "format": "aesipe-calibration", "version": 1, "split": split, "images": chosen,
        "corrected_images": [i for i in chosen if i in corrected],
        "map_key": "maps", "map": cfg.cam.map, "background_scale": best,
        "previous_background_scale": cfg.cam.background_scale,
        "ir_label": {"fg_background_scale": fg_scale, "bg_background_scale": best},
        "sweep": result["sweep"],
    }
    save_run_config(calibrated)
    atomic_write_text(Path(cfg.run_dir) / CALIBRATION_FILE, json.dumps(record, indent=1) + "\n")
    return calibrated, record


def describe(record: dict) -> str:
    lines = [f"background scale calibrated on {len(record['images'])} images of {record['split']!r} "
             f"(map {record['map']}):"]
    for row in record["sweep"]:
        miou = "-" if row["miou"] is None else f"{100 * row['miou']:.1f}"
        lines.append(f"  x{row['background_scale']:<5.2f} mIoU {miou}" + ("   <- chosen" if row["best"] else ""))
    ir = record["ir_label"]
    lines.append(f"stored: cam.background_scale={record['background_scale']:g} (was "
                 f"{record['previous_background_scale']:g}), ir_label.fg/bg_background_scale="
                 f"{ir['fg_background_scale']:g}/{ir['bg_background_scale']:g}")
    return "\n".join(lines)
