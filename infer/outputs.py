"""The files aesipe-label writes besides the masks, whichever engine runs the job (all written atomically).

Per image (called from ``LabelJob.write``): the confidence map (``confidence/<name>.png``, 8-bit grayscale,
255 x the probability of the written class), the overlay with its legend (``overlays/<name>.jpg``) and CVAT's
colour mask (``SegmentationClass/<name>.png``, RGB in the model's palette). For all images (called from
``LabelJob.finalize`` with the written masks): COCO's ``annotations.json``, CVAT's ``labelmap.txt`` and
``ImageSets/Segmentation/default.txt``, and ``review.csv``. The contact sheet is ``sheet.py``.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from aesipe.utils.atomic import atomic_write_bytes, atomic_write_text
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import colorize, load_label_png, overlay

from .postprocess import resize_labels_nearest

FORMATS = ("png", "coco", "cvat")
COCO_FILE, REVIEW_FILE, LABELMAP_FILE = "annotations.json", "review.csv", "labelmap.txt"
CVAT_LIST = "ImageSets/Segmentation/default.txt"
COCO_HINT = "--format coco needs pycocotools (the standard COCO RLE code): pip install 'aesipe[coco]'"


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``png,coco`` (or a list of such) -> the formats in a fixed order; ``png`` (the masks) is always made."""
    parts = [p.strip().lower() for item in ([text] if isinstance(text, str) else text) for p in str(item).split(",")]
    unknown = [p for p in parts if p and p not in FORMATS]
    if unknown:
        raise UserError(f"--format must be png, coco or cvat (comma-separated for several), got {unknown[0]!r}")
    return tuple(f for f in FORMATS if f in parts or f == "png")


def require_pycocotools():
    try:
        import pycocotools.mask as coco_mask
    except ImportError:
        raise UserError(COCO_HINT) from None
    return coco_mask


def check_cvat_palette(classes: Sequence[str], palette: np.ndarray) -> None:
    """CVAT reads a colour mask by its colours: two classes of one colour could not be told apart."""
    colours = [tuple(int(v) for v in palette[i]) for i in range(len(classes))]
    for i, colour in enumerate(colours):
        if colour in colours[:i]:
            raise UserError(f"--format cvat: classes {classes[colours.index(colour)]!r} and {classes[i]!r} share the "
                            f"colour {colour} in the model's palette, so CVAT could not tell them apart")


def padded_palette(palette: np.ndarray) -> np.ndarray:
    """uint8 [256, 3]: the model's palette, black beyond its end (every label value has a colour)."""
    full = np.zeros((256, 3), dtype=np.uint8)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    full[: len(palette)] = palette
    return full


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- per image ---------------------------------------------------------------------------------------------
def save_confidence_png(path: Path, values: np.ndarray) -> None:
    """uint8 H x W as an 8-bit grayscale PNG; zlib level 1: a third of level 6's time on a noisy map, 1.2x the bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(values, dtype=np.uint8), mode="L").save(buffer, format="PNG", compress_level=1)
    atomic_write_bytes(path, buffer.getvalue())


def load_confidence_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("L"), dtype=np.uint8)


def save_colour_png(path: Path, labels: np.ndarray, palette: np.ndarray) -> None:
    """RGB colour mask (CVAT's ``SegmentationClass``): each pixel the palette colour of its class."""
    atomic_write_bytes(path, _png(Image.fromarray(colorize(labels, palette), mode="RGB")))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def legend(width: int, present: Sequence[int], classes: Sequence[str], palette: np.ndarray) -> Image.Image:
    """A strip ``width`` wide with a colour swatch and the name of each present class (wrapped to rows)."""
    size = int(np.clip(width // 45, 11, 28))
    font, pad = _font(size), max(3, size // 3)
    entries = [(tuple(int(v) for v in palette[i]), classes[i] if i < len(classes) else str(i)) for i in present]
    if not entries:
        entries = [(None, "background only")]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    placed, x, y = [], pad, pad
    for colour, name in entries:
        w = size + pad + int(probe.textlength(name, font=font)) + 2 * pad
        if x > pad and x + w > width:
            x, y = pad, y + size + pad
        placed.append((x, y, colour, name))
        x += w
    strip = Image.new("RGB", (width, y + size + pad), (32, 32, 32))
    draw = ImageDraw.Draw(strip)
    for x, y, colour, name in placed:
        text_x = x
        if colour is not None:
            draw.rectangle([x, y, x + size - 1, y + size - 1], fill=colour, outline=(255, 255, 255))
            text_x = x + size + pad
        draw.text((text_x, y + size / 2), name, fill=(255, 255, 255), font=font, anchor="lm")
    return strip


def overlay_jpeg(rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, classes: Sequence[str],
                 max_side: int | None) -> bytes:
    """The blended preview (at the working resolution, at most ``max_side``) over a legend strip below it, so
    the legend never hides pixels."""
    height, width = rgb.shape[:2]
    if max_side is not None and max(height, width) > max_side:  # tiled images are full size: keep previews small
        scale = max_side / max(height, width)
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
        rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0))
    small = resize_labels_nearest(labels, height, width)
    present = [int(i) for i in np.flatnonzero(np.bincount(small.ravel(), minlength=256)) if 0 < i < 255]
    strip = legend(width, present, classes, palette)
    canvas = Image.new("RGB", (width, height + strip.height))
    canvas.paste(Image.fromarray(overlay(rgb, small, palette)), (0, 0))
    canvas.paste(strip, (0, height))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


# -- all images ----------------------------------------------------------------------------------------------
def coco_document(entries: Iterable[tuple[str, np.ndarray]], classes: Sequence[str], description: str) -> dict:
    """COCO with one run-length-encoded annotation per (image, present class); ``entries``: (file_name, labels).

    Category ids are the label values (background excluded); counts are pycocotools' compressed RLE."""
    coco_mask = require_pycocotools()
    images, annotations = [], []
    for image_id, (file_name, labels) in enumerate(entries, start=1):
        height, width = labels.shape
        images.append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)})
        for value in np.flatnonzero(np.bincount(labels.ravel(), minlength=len(classes))):
            if value == 0 or value >= len(classes):
                continue
            rle = coco_mask.encode(np.asfortranarray(labels == value, dtype=np.uint8))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(value),
                "segmentation": {"size": [int(height), int(width)], "counts": rle["counts"].decode("utf-8")},
                "area": int(coco_mask.area(rle)), "bbox": [float(v) for v in coco_mask.toBbox(rle)], "iscrowd": 0,
            })
    categories = [{"id": i, "name": name, "supercategory": ""} for i, name in enumerate(classes) if i > 0]
    return {"info": {"description": description}, "licenses": [], "images": images,
            "annotations": annotations, "categories": categories}


def write_coco(path: Path, document: dict) -> None:
    atomic_write_text(path, json.dumps(document, separators=(",", ":")) + "\n")


def cvat_labelmap(classes: Sequence[str], palette: np.ndarray) -> str:
    """CVAT "Segmentation mask 1.1" label map: ``name:r,g,b::`` per class (no parts, no actions)."""
    lines = ["# label:color_rgb:parts:actions"]
    lines += [f"{name}:{','.join(str(int(v)) for v in palette[i])}::" for i, name in enumerate(classes)]
    return "\n".join(lines) + "\n"


def write_cvat(output_dir: Path, names: Sequence[str], classes: Sequence[str], palette: np.ndarray) -> None:
    """``labelmap.txt`` and the image set (names without extension) beside ``SegmentationClass/``."""
    atomic_write_text(output_dir / LABELMAP_FILE, cvat_labelmap(classes, palette))
    atomic_write_text(output_dir / CVAT_LIST, "".join(f"{name}\n" for name in names))


REVIEW_COLUMNS = ("rank", "image", "mean_confidence", "uncertain_fraction", "classes", "mask", "confidence", "overlay")


def write_review(path: Path, rows: list[dict]) -> None:
    """``review.csv``: the labelled images from least to most confident (ties by name)."""
    rows = sorted(rows, key=lambda r: (r["mean_confidence"], r["image"]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REVIEW_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for rank, row in enumerate(rows, start=1):
        writer.writerow({**row, "rank": rank})
    atomic_write_text(path, buffer.getvalue())


# -- the job's end -------------------------------------------------------------------------------------------
def finalize_job(job) -> list[Path]:
    """``LabelJob.finalize``: the gathered outputs from the masks on disk and the report's records."""
    o, out, classes = job.options, job.output_dir, job.info.classes
    done = []
    for image in job.images:
        record = job.report.images.get(str(image.rel), {})
        if record.get("status") == "ok" and (out / job.mask_rel(image)).is_file():
            done.append((image, record))
    written: list[Path] = []
    if "coco" in o.formats:  # one mask in memory at a time
        entries = ((str(image.rel), load_label_png(out / job.mask_rel(image))) for image, _ in done)
        write_coco(out / COCO_FILE, coco_document(entries, classes, f"aesipe-label pseudo-labels of {job.model_path.name}"))
        written.append(out / COCO_FILE)
    if "cvat" in o.formats:
        write_cvat(out, [job.names[image.rel][: -len(".png")] for image, _ in done], classes, job.palette)
        written += [out / LABELMAP_FILE, out / CVAT_LIST]
    if o.confidence:
        rows = [{"image": str(image.rel), "mean_confidence": r["mean_confidence"], "uncertain_fraction": r["uncertain_fraction"],
                 "classes": " ".join(f"{k}:{v:.4f}" for k, v in sorted(r.get("classes", {}).items(), key=lambda kv: -kv[1])),
                 "mask": job.mask_rel(image), "confidence": r.get("confidence", job.confidence_rel(image)),
                 "overlay": job.overlay_path(image).relative_to(out).as_posix() if job.overlay_path(image).is_file() else ""}
                for image, r in done if "mean_confidence" in r]
        write_review(out / REVIEW_FILE, rows)
        written.append(out / REVIEW_FILE)
    if o.sheet:
        from .sheet import SheetEntry, write_sheet

        entries = []
        for image, record in done:
            overlay_path, conf = job.overlay_path(image), out / job.confidence_rel(image)
            entries.append(SheetEntry(str(image.rel), image.path, out / job.mask_rel(image), record,
                                      overlay_path if overlay_path.is_file() else None, conf if conf.is_file() else None))
        failed = [(rel, r.get("reason", "")) for rel, r in sorted(job.report.images.items()) if r.get("status") == "failed"]
        names = {str(image.rel): job.names[image.rel] for image, _ in done}
        title = f"aesipe-label: {job.model_path.name} on {out.name or out}"
        written.append(write_sheet(out, entries, failed, classes, job.palette, names, title))
    return written
