"""Label Studio tasks with the model's masks as pre-annotations, and the labelling config to review them in.

A task per image: ``data.image`` (the reference Label Studio loads: ``image_reference``), ``data.aesipe_image``
(the image's name in the labelling job, so ``aesipe-train corrections`` finds the image again whatever the
URL), and one prediction: ``model_version`` (the model's identity), ``score`` (the image's mean confidence:
Label Studio's "prediction score" column sorts the least confident first) and one ``brushlabels`` result per
foreground class present, its mask in Label Studio's own brush RLE (``aesipe.labelstudio_rle``). Unpainted
pixels are background, as in Label Studio's brush projects; the labelling config lists the foreground
classes with the model's colours.

Image references: ``--image-root URL`` makes ``URL/<name>`` (the images served by any web server, or cloud
storage); without it, Label Studio's local-file serving: ``/data/local-files/?d=<name>``, with Label Studio
started with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``
= the folder that was labelled (docs/review.md). numpy only, no torch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from aesipe.labelstudio_rle import encode_mask
from aesipe.utils.atomic import atomic_open, atomic_write_text

TASKS_FILE = "labelstudio_tasks.json"
CONFIG_FILE = "labelstudio_config.xml"
FROM_NAME, TO_NAME = "label", "image"
LOCAL_FILES_PREFIX = "/data/local-files/?d="


@dataclass(frozen=True)
class TaskEntry:
    name: str
    """The image's name in the labelling job (its path relative to INPUT, POSIX separators)."""
    labels: np.ndarray
    """uint8 H x W class indices (0 = background)."""
    mean_confidence: float | None = None


def image_reference(name: str, image_root: str | None) -> str:
    """What ``data.image`` holds: ``image_root`` + the name (URL-quoted), or the local-file-serving path."""
    prefix = LOCAL_FILES_PREFIX if image_root is None else image_root
    if image_root is not None and not prefix.endswith(("/", "=")):
        prefix += "/"
    return prefix + quote(name)


def brush_results(labels: np.ndarray, classes: Sequence[str]) -> list[dict]:
    """One ``brushlabels`` result per foreground class present in ``labels``."""
    height, width = labels.shape
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=len(classes))[: len(classes)])
    return [{
        "id": f"aesipe-{int(value)}", "type": "brushlabels", "from_name": FROM_NAME, "to_name": TO_NAME,
        "original_width": int(width), "original_height": int(height), "image_rotation": 0,
        "value": {"format": "rle", "rle": encode_mask(labels == value), "brushlabels": [classes[int(value)]]},
    } for value in present if value > 0]


def task(entry: TaskEntry, classes: Sequence[str], model_version: str, image_root: str | None) -> dict:
    """One image's task with the model's masks as its prediction."""
    prediction = {"model_version": model_version, "result": brush_results(entry.labels, classes)}
    if entry.mean_confidence is not None:
        prediction["score"] = round(float(entry.mean_confidence), 4)
    return {"data": {TO_NAME: image_reference(entry.name, image_root), "aesipe_image": entry.name},
            "predictions": [prediction]}


def labelling_config(classes: Sequence[str], palette: np.ndarray) -> str:
    """The project's labelling interface: the image and a brush label per foreground class, in the model's colours."""
    labels = "\n".join(f'    <Label value={quoteattr(name)} background="#{"".join(f"{int(v):02x}" for v in palette[i])}"/>'
                       for i, name in enumerate(classes) if i > 0)
    return (f'<View>\n  <Image name="{TO_NAME}" value="${TO_NAME}" zoom="true" zoomControl="true"/>\n'
            f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </BrushLabels>\n</View>\n')


def write_tasks(output_dir: Path, entries: Iterable[TaskEntry], classes: Sequence[str], palette: np.ndarray,
                model_version: str, image_root: str | None) -> list[Path]:
    """``labelstudio_tasks.json`` (streamed: one mask in memory at a time) and ``labelstudio_config.xml``."""
    output_dir = Path(output_dir)
    with atomic_open(output_dir / TASKS_FILE) as handle:
        handle.write(b"[")
        for number, entry in enumerate(entries):
            handle.write(b",\n" if number else b"\n")
            handle.write(json.dumps(task(entry, classes, model_version, image_root), separators=(",", ":")).encode())
        handle.write(b"\n]\n")
    atomic_write_text(output_dir / CONFIG_FILE, labelling_config(classes, palette))
    return [output_dir / TASKS_FILE, output_dir / CONFIG_FILE]
