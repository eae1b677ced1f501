"""calibrate: choose, from a few masks the user has, the map, its background scale and whether the CRF helps,
and store the choice in the run.

What makes the best pseudo-labels depends on the data and on the training run (on MSRC the maps
over-extend into grass and sky, so the paper's 0.8 is not the best scale, and which of CAM, IS-CAM and
AE-IS-CAM is best changes from seed to seed). ``calibrate`` takes ``images`` images of a split that have masks
(``calibration_masks``: spread evenly over the split, 20 by default), makes their CAMs if the run has none
yet, and judges on them every map the network makes (``cam``, ``iscam``, ``aeiscam``), each over a range of
background scales (eval-cam's rule), then each map at its best scale with the label CRF. The best of these
candidates is stored in the run's config: ``cam.map``, ``cam.background_scale``, ``cam.crf`` (make-cam's
files hold every map, so no CAM is remade; eval-cam, the CRF pseudo-labels, the pipeline and the exported
pseudo-labeller use the choice) and the IR labels' pair, with the authors' ratio kept (bg_conf at the
scale, fg_conf at scale / 0.8, at least 1.0). The choice, the images, the candidates and the chosen map's
curve go to ``<run>/calibration.json``. Judge the result on a split the calibration did not see.
With ``corrections.calibrate`` the run's reviewed masks count as masks too (``<run>/corrections/``: a
corrected image is judged on its reviewed mask), so a dataset without masks can be calibrated on a few
corrected images.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from aesipe import crf as crf_ops
from aesipe.config import RunConfig
from aesipe.corrections import CorrectionStore
from aesipe.data import open_dataset
from aesipe.utils.atomic import atomic_write_text
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import load_label_png

from ..runconfig import save_run_config

CALIBRATION_FILE = "calibration.json"
DEFAULT_RANGE = tuple(round(0.5 + 0.05 * i, 2) for i in range(21))  # 0.5, 0.55, ..., 1.5
AUTHORS_IR_RATIO = 0.8  # the authors' IR labels: fg_conf at x1.0, bg_conf at x0.8
MAP_NAMES = {"cam": "CAM", "iscam": "IS-CAM", "aeiscam": "AE-IS-CAM"}


def spread(ids: Sequence[str], count: int) -> list[str]:
    """``count`` ids spread evenly over ``ids`` (all of them when there are fewer)."""
    if count >= len(ids):
        return list(ids)
    picks = np.linspace(0, len(ids) - 1, count).round().astype(int)
    return [ids[i] for i in dict.fromkeys(picks.tolist())]


def calibration_masks(cfg: RunConfig, split: str, images: int) -> tuple[dict[str, np.ndarray], set[str]]:
    """The masks calibration judges on: ({image id of ``split``: label mask (uint8, 255 = void)}, the ids whose
    mask is a reviewed one).

    ``images`` of the split's images that have a mask, spread evenly over it. This is the one place where
    calibration gets its masks: with ``corrections.calibrate`` the run's reviewed masks count (a corrected
    image is judged on its reviewed mask, each id once)."""
    ds = open_dataset(cfg.data, split)
    corrected = CorrectionStore.of_run(cfg.run_dir).masks_for(ds) if cfg.corrections.calibrate else {}
    with_masks = [i for i in ds.ids if i in corrected or ds.mask_path(i) is not None]
    if not with_masks:
        raise UserError(f"no image of split {split!r} in {ds.root} has a mask: calibration needs a few masks")
    chosen = spread(with_masks, images)
    masks = {i: load_label_png(corrected[i]) if i in corrected else ds.load_mask(i) for i in chosen}
    return masks, {i for i in chosen if i in corrected}


def network_maps(cfg: RunConfig) -> tuple[str, ...]:
    """The maps the run's network makes (AE-IS-CAM only with affinity enhancement)."""
    return ("cam", "iscam", "aeiscam") if cfg.model.affinity_enhancement else ("cam", "iscam")


def calibrate(cfg: RunConfig, split: str | None = None, images: int = 20, scales: Sequence[float] | None = None,
              checkpoint: str | Path | None = None, progress: bool = True, maps: Sequence[str] | None = None,
              crf: bool = True) -> tuple[RunConfig, dict]:
    """Choose map, background scale and CRF on ``images`` masked images of ``split``; returns (new config,
    record). ``maps``: the candidate maps (default all the network makes); ``crf=False``: never the CRF."""
    from .evaluate import cam_dir, evaluate_cams
    from .make_cam import make_cams

    split = split or cfg.data.cam_split
    if images < 1:
        raise UserError(f"--images must be at least 1, not {images}")
    scales = tuple(float(s) for s in (scales or DEFAULT_RANGE))
    if len(scales) < 2 or min(scales) <= 0:
        raise UserError(f"calibration needs at least two positive background scales, got {list(scales)}")
    available = network_maps(cfg)
    maps = tuple(maps or available)
    unknown = [m for m in maps if m not in available]
    if unknown:
        raise UserError(f"--maps: this network makes {', '.join(available)}, not {', '.join(unknown)}")
    if crf and not crf_ops.crf_available():
        crf = False  # judged without: say so in the record and the table
        crf_note = f"CRF not tried: {crf_ops.INSTALL_HINT}"
    else:
        crf_note = None if crf else "CRF not tried (--no-crf)"
    masks, corrected = calibration_masks(cfg, split, images)
    chosen = list(masks)
    folder = cam_dir(cfg, split)
    if any(not (folder / f"{i}.npz").is_file() for i in chosen):
        make_cams(cfg, split, checkpoint, ids=chosen, progress=progress)  # only the CAM files still missing
    # The configured map first: on a tie it stays. It is read as "maps" (files older than the per-map arrays
    # hold only that one); another map is a candidate where the CAM files hold it.
    with np.load(folder / f"{chosen[0]}.npz") as data:
        stored = set(data.files)
    order = [m for m in sorted(maps, key=lambda m: m != cfg.cam.map) if m == cfg.cam.map or m in stored]
    if not order:
        raise UserError(f"the CAM files in {folder} hold none of the maps {', '.join(maps)}: run make-cam again")
    candidates, sweeps = [], {}
    for key in order:
        result = evaluate_cams(cfg, split, "maps" if key == cfg.cam.map else key, scales, masks=masks, progress=False)
        sweeps[key] = result["sweep"]
        best = next(row for row in result["sweep"] if row["best"])
        candidates.append({"map": key, "background_scale": best["background_scale"], "crf": False,
                           "miou": best["miou"]})
    if crf:
        for plain in list(candidates):
            key = "maps" if plain["map"] == cfg.cam.map else plain["map"]
            result = evaluate_cams(cfg, split, key, [plain["background_scale"]], crf_protocol="label",
                                   masks=masks, progress=False)
            candidates.append({**plain, "crf": True, "miou": result["miou"]})
    best = max(candidates, key=lambda c: -1.0 if c["miou"] is None else c["miou"])  # first of equals wins
    scale = float(best["background_scale"])
    fg_scale = max(1.0, round(scale / AUTHORS_IR_RATIO, 4))
    calibrated = replace(cfg, cam=replace(cfg.cam, map=best["map"], background_scale=scale, crf=best["crf"]),
                         ir_label=replace(cfg.ir_label, bg_background_scale=scale, fg_background_scale=fg_scale))
    record = {
        "format": "aesipe-calibration", "version": 2, "split": split, "images": chosen,
        "corrected_images": [i for i in chosen if i in corrected],
        "map": best["map"], "background_scale": scale, "crf": best["crf"], "miou": best["miou"],
        "previous": {"map": cfg.cam.map, "background_scale": cfg.cam.background_scale, "crf": cfg.cam.crf},
        "ir_label": {"fg_background_scale": fg_scale, "bg_background_scale": scale},
        "candidates": candidates, "crf_note": crf_note,
        "map_key": "maps", "sweep": sweeps[best["map"]], "sweeps": sweeps,
    }
    save_run_config(calibrated)
    atomic_write_text(Path(cfg.run_dir) / CALIBRATION_FILE, json.dumps(record, indent=1) + "\n")
    return calibrated, record


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def describe(record: dict) -> str:
    """The small table the choice was made from, the chosen map's curve, and what was stored."""
    lines = [f"calibrated on {len(record['images'])} images of {record['split']!r} (mIoU %, each map at its best "
             "background scale):", f"  {'map':<10} {'scale':>6} {'plain':>6} {'+CRF':>6}"]
    plain = [c for c in record["candidates"] if not c["crf"]]
    for row in plain:
        with_crf = next((c for c in record["candidates"] if c["crf"] and c["map"] == row["map"]), None)
        mark = ""
        if row["map"] == record["map"]:
            mark = "   <- chosen" + (" with the CRF" if record["crf"] else "")
        lines.append(f"  {MAP_NAMES[row['map']]:<10} x{row['background_scale']:<5.2f} {_percent(row['miou']):>6} "
                     f"{_percent(with_crf['miou']) if with_crf else '-':>6}{mark}")
    if record.get("crf_note"):
        lines.append(f"  ({record['crf_note']})")
    curve = "  ".join(f"x{r['background_scale']:g} {_percent(r['miou'])}" for r in record["sweep"])
    lines.append(f"{MAP_NAMES[record['map']]} by background scale: {curve}")
    ir, previous = record["ir_label"], record["previous"]
    lines.append(f"stored: cam.map={record['map']} cam.background_scale={record['background_scale']:g} "
                 f"cam.crf={str(record['crf']).lower()} (was {previous['map']} x{previous['background_scale']:g}"
                 f"{' +CRF' if previous['crf'] else ''}), ir_label.fg/bg_background_scale="
                 f"{ir['fg_background_scale']:g}/{ir['bg_background_scale']:g}")
    return "\n".join(lines)
