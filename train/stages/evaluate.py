"""eval-cam: judge the CAM files of a run against the ground truth (pseudo-label mIoU).

Reads ``<run>/cams/<split>/<id>.npz`` (``classes`` int64 [K], 0 first; ``maps`` float16 [K, H, W];
``cam`` float16 [K-1, H, W], the plain CAM). The prediction is ``classes[argmax]`` after the background
channel is multiplied by a scale (``cam.background_scale``; several with a sweep).

``map_key`` picks the map to judge: ``maps`` (the run's selection ``cam.map``, read from its own array
so that a map chosen after make-cam by ``calibrate`` needs no new files; files without that array give
their ``maps``), ``iscam`` or ``aeiscam`` (stored beside it by make-cam, same layout), or ``cam``, the
plain CAM with the network's own background channel (1 - max over *all* classes' CAMs, as the network
computes it before the tags select channels).
CAM files of aesipe 0.1 stored only the foreground channels of ``cam``; for those the background is
rebuilt as ``1 - max`` over the image's own classes, which can only be larger than the network's.

With a CRF protocol (see ``aesipe.crf``), the swept scale is the one before the label-CRF
(``label``) or the bg_conf scale of the IR labels (``ir``; fg_conf uses ``ir_label.fg_background_scale``),
and unsure IR pixels count as background.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np

from aesipe import crf as crf_ops
from aesipe.config import CrfConfig, RunConfig
from aesipe.data import SegmentationDataset, open_dataset
from aesipe.pseudo_labels import to_labels
from aesipe.utils.atomic import atomic_write_text
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import IGNORE_INDEX

from ..metrics import ConfusionMatrix, confusion_matrix, format_table
from ..parallel import parallel_map
from ..runconfig import save_run_config
from . import reads

MapKey = Literal["maps", "cam", "iscam", "aeiscam"]
MAP_KEYS: tuple[str, ...] = ("maps", "cam", "iscam", "aeiscam")
CrfProtocol = Literal["label", "ir"]
EVAL_FILE = "cam_eval.json"


def cam_dir(cfg: RunConfig, split: str) -> Path:
    """``<run>/cams/<split>``, named by the split really read: a folder dataset's ``train_aug`` is its
    ``train``, and the two share one set of CAM files instead of computing them twice."""
    from aesipe.data import resolve_split

    return Path(cfg.run_dir) / "cams" / resolve_split(cfg.data, split)


def selected_key(map_key: str, selection: str | None) -> str:
    """The array ``map_key`` names: ``maps`` is the run's selection (``cam.map``) when one is given."""
    return selection if map_key == "maps" and selection else map_key


def load_cam_file(path: Path, map_key: MapKey = "maps", selection: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(classes int64 [K], maps float32 [K, H, W] with the background channel first). ``selection``:
    ``cam.map``, the array ``maps`` stands for (make-cam files hold every map)."""
    return read_cam_file(path, map_key, selection)[:2]


def read_cam_file(path: Path, map_key: str = "maps", selection: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``load_cam_file`` + which channels fell back to the pre-ReLU CAM (bool [K]; all False in files made
    before the fallback existed)."""
    try:
        with np.load(path) as data:
            if selected_key(map_key, selection) in data.files:  # else the file's own "maps" (older files)
                map_key = selected_key(map_key, selection)
            # numpy's own KeyError text ("x is not a file in the archive") would garble the message.
            absent = [key for key in ("classes", map_key) if key not in data.files]
            if absent:
                raise KeyError(absent[0])
            classes = np.asarray(data["classes"], np.int64)
            maps = np.asarray(data[map_key], np.float32)  # [K, H, W], background first
            flag = f"fallback_{map_key}"
            fell_back = np.asarray(data[flag], bool) if flag in data.files else np.zeros(len(classes), bool)
            if map_key == "cam" and len(maps) == len(classes) - 1:  # aesipe 0.1 files: foreground only
                foreground = maps
                if len(foreground):
                    background = 1.0 - foreground.max(axis=0, keepdims=True)
                else:  # a background-only image: cam is [0, H, W]
                    background = np.ones((1, *foreground.shape[1:]), np.float32)
                maps = np.concatenate([background, foreground], axis=0)
    except KeyError as exc:
        hint = " (made by a model without affinity enhancement?)" if exc.args[0] == "aeiscam" else " (not a make-cam output?)"
        raise UserError(f"{path}: no {exc.args[0]!r} array{hint}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read CAM file {path}: {exc}") from None
    if classes.ndim != 1 or len(classes) != len(maps) or (len(classes) and classes[0] != 0):
        raise UserError(f"{path}: 'classes' must list the {len(maps)} channel label values, background (0) first")
    if fell_back.shape != classes.shape:
        raise UserError(f"{path}: 'fallback_{map_key}' must have one flag per channel")
    return classes, maps, fell_back


def cam_paths(cfg: RunConfig, ds: SegmentationDataset, split: str) -> dict[str, Path]:
    """``{id: npz path}`` for every image of the split; a missing file is a UserError."""
    folder = cam_dir(cfg, split)
    if not folder.is_dir():
        raise UserError(f"no CAMs for split {split!r} in {folder}: run `aesipe-train make-cam {cfg.run_dir}` first")
    paths = {i: folder / f"{i}.npz" for i in ds.ids}
    missing = [i for i, p in paths.items() if not p.is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} of {len(ds.ids)} images of split {split!r} have no CAM in {folder} (first: {missing[0]}); "
            f"finish `aesipe-train make-cam {cfg.run_dir}` first"
        )
    return paths


@dataclass(frozen=True)
class _EvalContext:
    ds: SegmentationDataset
    cams: dict[str, Path]
    map_key: str
    scales: tuple[float, ...]
    protocol: str | None
    crf: CrfConfig
    ir_fg_scale: float | None
    selection: str | None = None
    masks: Mapping[str, np.ndarray] | None = None


def _predictions(ctx: _EvalContext, image_id: str, classes: np.ndarray, maps: np.ndarray) -> list[np.ndarray]:
    """One label-value map per background scale, under the context's protocol."""
    if ctx.protocol is None:
        return [to_labels(maps, classes, s) for s in ctx.scales]
    image = ctx.ds.load_image(image_id)
    if image.shape[:2] != maps.shape[1:]:
        raise UserError(f"{ctx.cams[image_id]}: maps are {maps.shape[2]}x{maps.shape[1]} but the image is "
                        f"{image.shape[1]}x{image.shape[0]} (WxH)")  # fmt: skip
    if ctx.protocol == "label":
        return [crf_ops.label_crf(image, maps, classes, ctx.crf, s) for s in ctx.scales]
    fg_conf = crf_ops.label_crf(image, maps, classes, ctx.crf, ctx.ir_fg_scale)
    labels = []
    for scale in ctx.scales:
        ir = crf_ops.combine_ir_confidence(fg_conf, crf_ops.label_crf(image, maps, classes, ctx.crf, scale))
        labels.append(np.where(ir == IGNORE_INDEX, 0, ir))  # judged with unsure = background
    return labels


def _image_confusions(ctx: _EvalContext, image_id: str) -> tuple[np.ndarray, list[int]]:
    """(int64 [scales, N, N]: the image's confusion matrix for each background scale, the label values of
    its tagged classes whose map fell back to the pre-ReLU CAM)."""
    gt = ctx.masks[image_id] if ctx.masks is not None else ctx.ds.load_mask(image_id)
    classes, maps, fell_back = read_cam_file(ctx.cams[image_id], ctx.map_key, ctx.selection)
    if maps.shape[1:] != gt.shape:
        raise UserError(f"{ctx.cams[image_id]}: maps are {maps.shape[2]}x{maps.shape[1]} but the mask is "
                        f"{gt.shape[1]}x{gt.shape[0]} (WxH)")  # fmt: skip
    if classes.max() > ctx.ds.num_classes:
        raise UserError(f"{ctx.cams[image_id]}: class value {int(classes.max())} but the dataset has {ctx.ds.num_classes} classes")
    n = ctx.ds.num_classes + 1
    matrices = np.stack([confusion_matrix(gt, pred, n) for pred in _predictions(ctx, image_id, classes, maps)])
    return matrices, [int(c) for c in classes[fell_back]]


def evaluate_cams(
    cfg: RunConfig,
    split: str | None = None,
    map_key: MapKey = "maps",
    background_scales: Sequence[float] | None = None,
    crf_protocol: CrfProtocol | None = None,
    progress: bool = True,
    ids: Sequence[str] | None = None,
    masks: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """mIoU etc. of the run's CAM files on ``split`` (default ``data.cam_split``; ``ids``: only those images;
    ``masks``: {id: label mask} to judge against instead of the dataset's, for those ids).

    Every scale in ``background_scales`` (default: ``cam.background_scale``, or for the ``ir``
    protocol ``ir_label.bg_background_scale``) is judged; the headline figures are those of the first,
    ``sweep`` lists them all with the best marked. Returns a JSON-ready dict (see ``save_cam_eval``).
    """
    split = split or cfg.data.cam_split
    if map_key not in MAP_KEYS:
        raise UserError(f"map key must be one of {', '.join(MAP_KEYS)}, not {map_key!r}")
    if crf_protocol not in (None, "label", "ir"):
        raise UserError(f"CRF protocol must be 'label' or 'ir', not {crf_protocol!r}")
    if crf_protocol is not None:
        crf_ops.require_pydensecrf()
    if not background_scales:
        background_scales = (cfg.ir_label.bg_background_scale if crf_protocol == "ir" else cfg.cam.background_scale,)
    scales = tuple(dict.fromkeys(float(s) for s in background_scales))  # unique, in the given order
    ds = open_dataset(cfg.data, split)
    if masks is not None:
        ids = list(masks)
    if ids is not None:
        unknown = [i for i in ids if i not in ds.image_paths]
        if unknown:
            raise UserError(f"image {unknown[0]!r} is not in split {split!r} of {ds.root}")
        ds = replace(ds, ids=list(ids))
    if masks is None and not ds.has_masks:
        raise UserError(f"split {split!r} of {ds.root} has no ground-truth masks for every image: cannot evaluate")
    cams = cam_paths(cfg, ds, split)
    save_run_config(cfg)
    ir_fg_scale = cfg.ir_label.fg_background_scale if crf_protocol == "ir" else None  # read only when used
    ctx = _EvalContext(ds, cams, map_key, scales, crf_protocol, cfg.crf, ir_fg_scale, cfg.cam.map, masks)
    per_scale = [ConfusionMatrix(ds.class_names) for _ in scales]
    workers = cfg.crf.workers if crf_protocol else 1  # without a CRF the work is too light to share
    desc = f"eval-cam {split}" + (f" +CRF({crf_protocol})" if crf_protocol else "")
    fallback_classes: dict[str, int] = {}
    fallback_images = 0
    for matrices, fell_back in parallel_map(_image_confusions, ds.ids, ctx, workers, desc, progress):
        for accumulator, matrix in zip(per_scale, matrices):
            accumulator.add(matrix)
        fallback_images += bool(fell_back)
        for value in fell_back:
            name = ds.class_names[value]
            fallback_classes[name] = fallback_classes.get(name, 0) + 1

    summaries = [m.summary() for m in per_scale]
    best = max(range(len(scales)), key=lambda k: -1.0 if summaries[k]["miou"] is None else summaries[k]["miou"])
    result = {
        "split": split,
        "num_images": len(ds),
        "map_key": map_key,
        "crf_protocol": crf_protocol,
        "background_scale": scales[0],
        **summaries[0],
        "sweep": [
            {"background_scale": s, "miou": summaries[k]["miou"], "best": k == best} for k, s in enumerate(scales)
        ],
        "best_background_scale": scales[best],
        # images with a tagged class whose map was zero everywhere (its pre-ReLU CAM stood in)
        "zero_map_fallback": {"images": fallback_images, "classes": fallback_classes},
    }
    if crf_protocol == "ir":
        result["ir_fg_background_scale"] = cfg.ir_label.fg_background_scale
    if crf_protocol:
        result["crf"] = {k: v for k, v in asdict(cfg.crf).items() if k not in ("workers", "protocol")}
    return result


def describe(result: dict) -> str:
    """Title + table + sweep lines for the terminal."""
    protocol = result["crf_protocol"]
    title = (
        f"{result['split']} ({result['num_images']} images), map {result['map_key']!r}, background x "
        f"{result['background_scale']:g}" + (f", +CRF ({protocol} protocol)" if protocol else "")
    )
    lines = [format_table(result, title)]
    fallback = result.get("zero_map_fallback") or {}
    if fallback.get("images"):
        classes = ", ".join(f"{name} x{count}" for name, count in sorted(fallback["classes"].items()))
        lines.append(f"{fallback['images']} image(s) had a tagged class with an all-zero map; its CAM before the "
                     f"ReLU stood in ({classes})")
    if len(result["sweep"]) > 1:
        lines.append("background scale sweep:")
        for row in result["sweep"]:
            miou = "-" if row["miou"] is None else f"{100 * row['miou']:.1f}"
            lines.append(f"  x{row['background_scale']:<5.2f} mIoU {miou}" + ("   <- best" if row["best"] else ""))
    return "\n".join(lines)


def save_cam_eval(cfg: RunConfig, plain: dict, with_crf: dict | None = None) -> Path:
    """Write ``<run>/cam_eval.json`` atomically: the plain result, plus the CRF result under ``"crf_eval"``."""
    document = {"format": "aesipe-cam-eval", "version": 1, **plain}
    if with_crf is not None:
        document["crf_eval"] = with_crf
    path = Path(cfg.run_dir) / EVAL_FILE
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")
    return path


@reads("cam.map", "cam.background_scale", "cam.sweep", "cam.crf", when={"crf": "cam.crf"})
def run_eval_cam(cfg: RunConfig) -> dict:
    """The pipeline's ``eval-cam``: the run's pseudo-labels as it makes them (its map, background scale and, if
    calibrate chose it, the label CRF; and the sweep) on ``data.cam_split``."""
    result = evaluate_cams(cfg, cfg.data.cam_split, "maps", [cfg.cam.background_scale, *cfg.cam.sweep],
                           crf_protocol="label" if cfg.cam.crf else None)
    print(describe(result))
    save_cam_eval(cfg, result)
    return {"miou": result["miou"], "split": cfg.data.cam_split}
