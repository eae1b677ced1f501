"""``aesipe-label --reviewed RUN/corrections``: masks a person reviewed are copied through, never relabelled.

An image of the job with a correction in the store (``aesipe.corrections``; matched by its output name, or
its file name without suffix, against the corrections' image ids) gets the reviewed mask as its mask; its
record says ``reviewed`` (with where the correction came from) and the mask carries, instead of a model's
record, ``{"reviewed": {digest, source, imported}}``. Such a mask is kept by every later run -- whatever the
model, the settings or ``--overwrite`` -- unless ``--reviewed`` brings a different correction of that image
(then that one is copied). Its companions are made as for any mask; its confidence is 1 everywhere (a
person decided every pixel), so ``review.csv`` and Label Studio's score order put it last.

The copies are made by the job itself, before the engine labels the rest: a copy needs no model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from aesipe.contract import ModelInfo
from aesipe.corrections import CORRECTIONS_DIR, RECORD_FILE, CorrectionStore
from aesipe.imaging import image_size, read_image, strip_image_suffix
from aesipe.utils.atomic import atomic_write_bytes
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import load_label_png, save_label_png

from . import companions, fingerprint
from .job import LabelJob, mask_status
from .layout import ImageTask
from .report import MASK_FILE, Report, confidence_record, mask_record

REVIEWED_KEY = "reviewed"


def open_store(folder: Path, info: ModelInfo) -> CorrectionStore:
    """The corrections at ``folder`` (a run's ``corrections/`` folder, or the run itself), checked against the model."""
    folder = Path(folder)
    if not (folder / RECORD_FILE).is_file() and (folder / CORRECTIONS_DIR / RECORD_FILE).is_file():
        folder = folder / CORRECTIONS_DIR
    if not (folder / RECORD_FILE).is_file():
        raise UserError(f"--reviewed {folder}: no {RECORD_FILE} (give RUN/corrections, made by `aesipe-train corrections`)")
    store = CorrectionStore(folder)
    if store.classes is not None and tuple(store.classes) != tuple(info.classes):
        raise UserError(f"--reviewed {folder}: the corrections are masks of classes {list(store.classes)}, the model "
                        f"labels {list(info.classes)}")
    return store


def match(tasks: Sequence[ImageTask], store: CorrectionStore) -> dict[str, str]:
    """{task rel: correction image id} for the job's images that have a correction."""
    found = {}
    for task in tasks:
        candidates = (task.name, strip_image_suffix(task.rel.rsplit("/", 1)[-1]))
        image_id = next((c for c in candidates if c in store), None)
        if image_id is not None:
            found[task.rel] = image_id
    return found


def reviewed_record(mask: Path) -> dict | None:
    """The reviewed part of a mask's record on disk (None: not a reviewed mask, or no mask)."""
    record = fingerprint.read(mask) if mask.is_file() else None
    value = record.get(REVIEWED_KEY) if record else None
    return value if isinstance(value, dict) else None


def _reviewed_on_disk(job: LabelJob, task: ImageTask, report: Report) -> dict | None:
    """``reviewed_record`` of the task's mask, without reading a mask the earlier report already describes
    (same size and mtime) as a model's: a re-run of a large folder reads no mask (docs/scale.md)."""
    mask = job.layout.mask(task.name)
    status = mask_status(mask)
    if status is None:
        return None
    previous = report.images.get(task.rel)
    if previous is not None and not previous.get(REVIEWED_KEY) and report.mask_file(task.rel) == status:
        return None
    return reviewed_record(mask)


def split_tasks(job: LabelJob, tasks: Sequence[ImageTask], report: Report) -> tuple[list[ImageTask], list[tuple[ImageTask, str]]]:
    """(tasks the model labels, (task, correction id) to copy now). Reviewed masks already on disk are kept
    (recorded in ``report``) and leave the model's list whether or not ``--reviewed`` was given."""
    store = open_store(job.settings.reviewed, job.info) if job.settings.reviewed else None
    corrections = match(tasks, store) if store is not None else {}
    for_model, to_copy = [], []
    for task in tasks:
        on_disk = _reviewed_on_disk(job, task, report)
        image_id = corrections.get(task.rel)
        if image_id is not None and (on_disk is None or on_disk.get("digest") != store.entry(image_id)["digest"]
                                     or job.companions_missing(task)):
            to_copy.append((task, image_id))
        elif on_disk is not None:
            previous = report.images.get(task.rel)
            if not (previous and previous.get("status") == "ok" and previous.get(REVIEWED_KEY)):
                previous = _record(job, task, load_label_png(job.layout.mask(task.name)), on_disk)
            report.set(task.rel, {**previous, "resumed": True, MASK_FILE: mask_status(job.layout.mask(task.name))})
        else:
            for_model.append(task)
    return for_model, to_copy


def _record(job: LabelJob, task: ImageTask, labels: np.ndarray, reviewed: dict) -> dict:
    layout = job.layout
    record = {**mask_record(labels, job.info.classes, layout.mask_rel(task.name)), REVIEWED_KEY: True,
              "reviewed_source": reviewed.get("source", ""), "reviewed_imported": reviewed.get("imported", ""),
              MASK_FILE: mask_status(layout.mask(task.name))}
    if layout.confidence(task.name).is_file():
        record.update(confidence_record(np.full(labels.shape, 255, np.uint8), layout.confidence_rel(task.name)))
    return record


def copy_reviewed(job: LabelJob, task: ImageTask, store: CorrectionStore, image_id: str) -> dict:
    """Write ``task``'s mask from its correction (with its companions); returns its report record."""
    layout, settings = job.layout, job.settings
    labels = store.load_mask(image_id)
    size = image_size(Path(task.path))
    if labels.shape != size:
        return {"status": "failed", "reason": f"the reviewed mask of {image_id!r} is {labels.shape[1]}x{labels.shape[0]} "
                                              f"but the image is {size[1]}x{size[0]} (WxH)"}
    entry = store.entry(image_id)
    reviewed = {"digest": entry["digest"], "source": entry.get("source", ""), "imported": entry.get("imported", "")}
    palette = companions.padded_palette(job.info.palette)
    for stale in layout.companions(task.name):
        stale.unlink(missing_ok=True)
    save_label_png(layout.mask(task.name), labels, palette, fingerprint.encode({REVIEWED_KEY: reviewed}))
    if settings.confidence:
        companions.save_confidence_png(layout.confidence(task.name), np.full(labels.shape, 255, np.uint8))
    if "cvat" in settings.formats:
        companions.save_colour_png(layout.cvat(task.name), labels, palette)
    if settings.overlay:
        rgb = read_image(Path(task.path), None).rgb
        data = companions.overlay_jpeg(rgb, labels, palette, job.info.classes, settings.max_side)
        atomic_write_bytes(layout.overlay(task.name), data)
    return _record(job, task, labels, reviewed)


def write_reviewed(job: LabelJob, to_copy: list[tuple[ImageTask, str]], report: Report, log) -> None:
    if not to_copy:
        return
    store = open_store(job.settings.reviewed, job.info)
    for task, image_id in to_copy:
        try:
            record = copy_reviewed(job, task, store, image_id)
        except (OSError, ValueError, UserError) as exc:
            record = {"status": "failed", "reason": f"reviewed mask: {exc}"}
        report.set(task.rel, record)
    log(f"{len(to_copy)} reviewed mask(s) copied from {store.folder}")
