"""Pseudo-label PNGs from a run's CAM files (optionally label-CRF refined), and a contact sheet.

Output folders (``pseudo_labels/<split>``, ``ir_labels/<split>``) remember the settings they were
made with, the CAM folder's included (``train/output_folders.py``): a re-run with the same ones resumes, and
other settings or regenerated CAMs redo the folder, so it never mixes labels made two ways.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from aesipe import crf as crf_ops
from aesipe.config import CrfConfig, RunConfig
from aesipe.data import SegmentationDataset, open_dataset
from aesipe.pseudo_labels import to_labels
from aesipe.utils.atomic import atomic_write_bytes
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import load_label_png, overlay, save_label_png

from ..output_folders import folder_digest, prepare_output_dir
from ..parallel import parallel_map
from ..runconfig import save_run_config
from .evaluate import MapKey, cam_dir, cam_paths, load_cam_file


def prepare_label_dir(out_dir: Path, settings: dict, cams: Path) -> None:
    """Make ``out_dir`` hold only PNGs made with ``settings`` from the CAMs in ``cams`` (module docstring)."""
    prepare_output_dir(out_dir, {**settings, "cams": folder_digest(cams)}, "*.png")


def write_label_pngs(
    out_dir: Path,
    ids: Sequence[str],
    worker: Callable[[object, str], object],
    context: object,
    workers: int,
    desc: str,
    progress: bool = True,
) -> int:
    """Run ``worker(context, id)`` (which writes ``out_dir/<id>.png``) for every id without a PNG yet."""
    todo = [i for i in ids if not (out_dir / f"{i}.png").is_file()]
    for _ in parallel_map(worker, todo, context, workers, desc, progress):
        pass
    return len(todo)


@dataclass(frozen=True)
class _PseudoLabelContext:
    ds: SegmentationDataset
    cams: dict[str, Path]
    out_dir: Path
    map_key: str
    background_scale: float
    crf: CrfConfig | None
    selection: str | None = None


def _write_pseudo_label(ctx: _PseudoLabelContext, image_id: str) -> str:
    classes, maps = load_cam_file(ctx.cams[image_id], ctx.map_key, ctx.selection)
    if ctx.crf is None:
        labels = to_labels(maps, classes, ctx.background_scale)
    else:
        labels = crf_ops.label_crf(ctx.ds.load_image(image_id), maps, classes, ctx.crf, ctx.background_scale)
    save_label_png(ctx.out_dir / f"{image_id}.png", labels.astype(np.uint8), ctx.ds.palette)
    return image_id


def write_pseudo_labels(
    cfg: RunConfig,
    split: str | None = None,
    map_key: MapKey = "maps",
    background_scale: float | None = None,
    crf: bool = False,
    progress: bool = True,
) -> Path:
    """Palette PNGs ``<run>/pseudo_labels/<split>/<id>.png``: argmax after background x scale
    (default ``cam.background_scale``), then one label-CRF when ``crf`` is set. Returns the folder."""
    split = split or cfg.data.cam_split
    scale = cfg.cam.background_scale if background_scale is None else float(background_scale)
    if crf:
        crf_ops.require_pydensecrf()
    ds = open_dataset(cfg.data, split)
    out_dir = Path(cfg.run_dir) / "pseudo_labels" / split
    settings = {"kind": "pseudo_labels", "map_key": map_key, "map": cfg.cam.map, "background_scale": scale,
                "crf": asdict(cfg.crf) | {"workers": None, "protocol": None} if crf else None}  # fmt: skip
    cams = cam_paths(cfg, ds, split)
    save_run_config(cfg)
    prepare_label_dir(out_dir, settings, cam_dir(cfg, split))
    ctx = _PseudoLabelContext(ds, cams, out_dir, map_key, scale, cfg.crf if crf else None, cfg.cam.map)
    workers = cfg.crf.workers if crf else 1
    write_label_pngs(out_dir, ds.ids, _write_pseudo_label, ctx, workers, f"pseudo-labels {split}", progress)
    return out_dir


def _fit(image: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    """Resize into height x width keeping the aspect ratio, centred on a grey canvas."""
    h, w = image.shape[:2]
    scale = min(height / h, width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = np.asarray(Image.fromarray(image).resize(size, Image.NEAREST if nearest else Image.BILINEAR))
    canvas = np.full((height, width, 3), 96, np.uint8)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = resized
    return canvas


def contact_sheet(
    ds: SegmentationDataset,
    label_dir: Path,
    out_path: Path,
    max_images: int = 16,
    tile: tuple[int, int] = (160, 213),
) -> Path:
    """One JPEG: a row per image (up to ``max_images``, spread evenly over the split) of
    image | ground-truth overlay | label overlay."""
    ids = [i for i in ds.ids if (Path(label_dir) / f"{i}.png").is_file()]
    ids = ids[:: max(1, len(ids) // max_images)][:max_images]
    if not ids:
        raise UserError(f"no label PNGs in {label_dir} to show")
    height, width = tile
    rows = []
    for image_id in ids:
        image = ds.load_image(image_id)
        mask = ds.load_mask(image_id)
        labels = load_label_png(Path(label_dir) / f"{image_id}.png")
        gt_tile = overlay(image, mask, ds.palette, alpha=0.6) if mask is not None else np.full_like(image, 96)
        tiles = [_fit(image, height, width), _fit(gt_tile, height, width), _fit(overlay(image, labels, ds.palette, 0.6), height, width)]
        row = Image.fromarray(np.concatenate(tiles, axis=1))
        ImageDraw.Draw(row).text((4, 2), image_id, fill=(255, 255, 255))
        rows.append(np.asarray(row))
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    header = Image.new("RGB", (sheet.width, 16), (32, 32, 32))
    draw = ImageDraw.Draw(header)
    for column, name in enumerate(("image", "ground truth", Path(label_dir).parent.name.replace("_", " "))):
        draw.text((column * width + 4, 2), name, fill=(255, 255, 255))
    full = Image.new("RGB", (sheet.width, sheet.height + 16))
    full.paste(header, (0, 0))
    full.paste(sheet, (0, 16))
    buffer = io.BytesIO()
    full.save(buffer, format="JPEG", quality=90)
    atomic_write_bytes(out_path, buffer.getvalue())
    return out_path
