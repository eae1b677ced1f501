"""The outputs that gather every image of a job, made once the images are done, from the files on disk
and the report's records alone (so every engine calls the same ``gather_outputs``, and kept masks of
earlier runs are included): COCO's ``annotations.json``, CVAT's ``labelmap.txt`` and image list, Label
Studio's tasks and labelling config (``labelstudio.py``), ``review.csv`` and the contact sheet (``sheet.py``).
All written atomically.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from aesipe.utils.atomic import atomic_write_text
from aesipe.utils.labelpng import load_label_png

from .companions import padded_palette, require_pycocotools
from .job import LabelJob
from .layout import COCO_FILE, CVAT_LIST, LABELMAP_FILE, REVIEW_FILE, ImageTask, OutputLayout
from .report import Report

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def inert_cell(value):
    """A spreadsheet cell that is text, never a formula: a leading ``=``, ``+``, ``-``, ``@``, tab or CR gets
    a ``'`` before it (what spreadsheets themselves do to show such text). Numbers pass unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


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


def write_cvat(layout: OutputLayout, names: Sequence[str], classes: Sequence[str], palette: np.ndarray) -> None:
    """``labelmap.txt`` and the image set (the images' names) beside ``SegmentationClass/``."""
    atomic_write_text(layout.file(LABELMAP_FILE), cvat_labelmap(classes, palette))
    atomic_write_text(layout.file(CVAT_LIST), "".join(f"{name}\n" for name in names))


REVIEW_COLUMNS = ("rank", "image", "mean_confidence", "uncertain_fraction", "classes", "mask", "confidence", "overlay")


def write_review(path: Path, rows: list[dict]) -> None:
    """``review.csv``: the labelled images from least to most confident (ties by name)."""
    rows = sorted(rows, key=lambda r: (r["mean_confidence"], r["image"]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REVIEW_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for rank, row in enumerate(rows, start=1):
        writer.writerow({key: inert_cell(value) for key, value in {**row, "rank": rank}.items()})
    atomic_write_text(path, buffer.getvalue())


def gather_outputs(job: LabelJob, tasks: Sequence[ImageTask], report: Report) -> list[Path]:
    """The whole-job outputs the settings ask for, from the masks on disk and ``report``; returns them."""
    s, layout, classes = job.settings, job.layout, job.info.classes
    if not ("coco" in s.formats or "cvat" in s.formats or s.confidence or s.sheet):
        return []
    palette = padded_palette(job.info.palette)
    statuses = dict(report.statuses())
    done = [(task, report.images[task.rel]) for task in tasks
            if statuses.get(task.rel) == "ok" and layout.mask(task.name).is_file()]
    written: list[Path] = []
    if "coco" in s.formats:  # one mask in memory at a time
        entries = ((task.rel, load_label_png(layout.mask(task.name))) for task, _ in done)
        write_coco(layout.file(COCO_FILE), coco_document(entries, classes, f"aesipe-label pseudo-labels of {job.model_path.name}"))
        written.append(layout.file(COCO_FILE))
    if "cvat" in s.formats:
        write_cvat(layout, [task.name for task, _ in done], classes, palette)
        written += [layout.file(LABELMAP_FILE), layout.file(CVAT_LIST)]
    if "labelstudio" in s.formats:  # one mask in memory at a time
        from .labelstudio import TaskEntry, write_tasks

        entries = (TaskEntry(task.rel, load_label_png(layout.mask(task.name)), r.get("mean_confidence")) for task, r in done)
        written += write_tasks(layout.root, entries, classes, palette, f"{job.model_path.name}@{job.model_id}",
                               s.image_root)
    if s.confidence:
        rows = [{"image": task.rel, "mean_confidence": r["mean_confidence"], "uncertain_fraction": r["uncertain_fraction"],
                 "classes": " ".join(f"{k}:{v:.4f}" for k, v in sorted(r.get("classes", {}).items(), key=lambda kv: -kv[1])),
                 "mask": layout.mask_rel(task.name), "confidence": r.get("confidence", layout.confidence_rel(task.name)),
                 "overlay": layout.overlay(task.name).relative_to(layout.root).as_posix()
                 if layout.overlay(task.name).is_file() else ""}
                for task, r in done if "mean_confidence" in r]
        write_review(layout.file(REVIEW_FILE), rows)
        written.append(layout.file(REVIEW_FILE))
    if s.sheet:
        from .sheet import SheetEntry, write_sheet

        entries = []
        for task, record in done:
            overlay, confidence = layout.overlay(task.name), layout.confidence(task.name)
            entries.append(SheetEntry(task.rel, Path(task.path), layout.mask(task.name), record,
                                      overlay if overlay.is_file() else None, confidence if confidence.is_file() else None))
        failed = [(rel, report.images[rel].get("reason", "")) for rel in sorted(statuses) if statuses[rel] == "failed"]
        names = {task.rel: task.name + ".png" for task, _ in done}
        title = f"aesipe-label: {job.model_path.name} on {job.input_spec}"
        written.append(write_sheet(layout.root, entries, failed, classes, palette, names, title))
    return written
