"""IR labels for IRN (stage 2): confident foreground / background regions from the CAMs + dense CRF.

``<run>/ir_labels/<split>/<id>.png``: palette PNGs of label values with 255 = unsure, made by
``aesipe.crf.ir_labels`` (fg_conf = CRF(argmax of the maps as they are), bg_conf = CRF(argmax
with background x ``ir_label.bg_background_scale``)). Parallel over images, resumable (finished PNGs
are kept while the settings stay the same), each PNG written atomically. With ``corrections.ir_labels``
an image with a reviewed mask (``<run>/corrections/``) gets that mask as its IR label instead.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from aesipe import crf as crf_ops
from aesipe.config import CrfConfig, IrLabelConfig, RunConfig
from aesipe.corrections import CorrectionStore
from aesipe.data import SegmentationDataset, open_dataset
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import load_label_png, save_label_png

from ..runconfig import save_run_config
from . import reads
from .evaluate import cam_dir, cam_paths, load_cam_file
from .label_folders import prepare_label_dir, write_label_pngs


@dataclass(frozen=True)
class _IrContext:
    ds: SegmentationDataset
    cams: dict[str, Path]
    out_dir: Path
    crf: CrfConfig
    ir: IrLabelConfig
    corrected: dict[str, Path]
    selection: str


def _write_ir_label(ctx: _IrContext, image_id: str) -> str:
    if image_id in ctx.corrected:  # a reviewed mask: certain everywhere but its void
        save_label_png(ctx.out_dir / f"{image_id}.png", load_label_png(ctx.corrected[image_id]), ctx.ds.palette)
        return image_id
    classes, maps = load_cam_file(ctx.cams[image_id], "maps", ctx.selection)
    image = ctx.ds.load_image(image_id)
    if image.shape[:2] != maps.shape[1:]:
        raise UserError(f"{ctx.cams[image_id]}: maps are {maps.shape[2]}x{maps.shape[1]} but the image is "
                        f"{image.shape[1]}x{image.shape[0]} (WxH)")  # fmt: skip
    labels = crf_ops.ir_labels(
        image, maps, classes, ctx.crf, fg_scale=ctx.ir.fg_background_scale, bg_scale=ctx.ir.bg_background_scale
    )
    save_label_png(ctx.out_dir / f"{image_id}.png", labels.astype(np.uint8), ctx.ds.palette)
    return image_id


def make_ir_labels(cfg: RunConfig, split: str | None = None, progress: bool = True) -> Path:
    """Write the IR labels of ``split`` (default ``data.train_split``, what IRN trains on); returns the folder."""
    split = split or cfg.data.train_split
    crf_ops.require_pydensecrf()
    ds = open_dataset(cfg.data, split)
    out_dir = Path(cfg.run_dir) / "ir_labels" / split
    settings = {
        "kind": "ir_labels",
        "fg_background_scale": cfg.ir_label.fg_background_scale,
        "bg_background_scale": cfg.ir_label.bg_background_scale,
        "map": cfg.cam.map,
        "crf": asdict(cfg.crf) | {"workers": None, "protocol": None},
    }
    store = CorrectionStore.of_run(cfg.run_dir)
    corrected = store.masks_for(ds) if len(store) and cfg.corrections.ir_labels else {}
    if corrected:  # only then: a run without corrections keeps the IR labels it made before
        settings["corrections"] = store.digest(list(corrected))
    cams = cam_paths(cfg, ds, split)
    save_run_config(cfg)
    prepare_label_dir(out_dir, settings, cam_dir(cfg, split))
    ctx = _IrContext(ds, cams, out_dir, cfg.crf, cfg.ir_label, corrected, cfg.cam.map)
    write_label_pngs(out_dir, ds.ids, _write_ir_label, ctx, cfg.ir_label.workers, f"ir-labels {split}", progress)
    return out_dir


@reads("cam.map", "crf", "ir_label", when={"corrections.ir_labels": "corrections"})
def run_ir_label(cfg: RunConfig) -> dict:
    """The pipeline's ``ir-label``."""
    make_ir_labels(cfg, cfg.data.train_split)
    return {}
