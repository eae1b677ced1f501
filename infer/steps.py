"""The per-image pipeline of a labelling job: decode -> prepare -> model -> finish -> write.

    decoded = decode(task, job)                         # the pixels (and tags), or the reason it cannot be read
    item = labeler.prepare(decoded.image, decoded.tags) # the graph's inputs
    for task, outputs in run_batch_or_singles(labeler, [(task, item), ...]):   # the model
        labelled = labeler.finish(item, outputs)        # labels (and confidence) at the image's size
        record = MaskWriter(job).write(task, labelled, decoded.image.rgb, decoded.content)   # files + record

Every step is a plain function or a small class over explicit data (``LabelJob``, ``ImageTask``), so the
engines only schedule it: the local engine runs the steps in threads, the Ray engine in tasks and actors.
A step's failure is one image's failure: ``decode`` and ``run_batch_or_singles`` return the reason, and
the engines record a failed write with its reason.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from aesipe.imaging import DecodedImage, ImageReadError, read_image
from aesipe.utils.atomic import atomic_write_bytes
from aesipe.utils.labelpng import load_label_png, save_label_png

from . import companions, fingerprint
from .items import Labelled, Prepared
from .job import LabelJob, mask_status
from .labeler import Labeler
from .layout import ImageTask
from .report import MASK_FILE, ZERO_MAPS, confidence_record, mask_record

MACHINE_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)
"""Write errors that are the machine's, not one image's: they stop the run instead of failing every image."""


def is_machine_fault(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in MACHINE_FAULTS


@dataclass
class Decoded:
    task: ImageTask
    image: DecodedImage
    tags: np.ndarray | None
    """A pseudo-labeller's multi-hot [C] tag vector (None for segmenters)."""
    content: str
    """The file's content digest (``fingerprint.file_digest(path, 32)``), for its mask's record."""


def decode(task: ImageTask, job: LabelJob) -> Decoded | str:
    """The image read at the job's working size, with its tag vector and content digest; or the reason it
    cannot be labelled."""
    vector = None
    if job.info.needs_tags:
        if task.tags is None:
            return f"no row for this image in {job.settings.tags_csv}"
        vector = np.zeros(job.info.num_classes, dtype=np.float32)
        vector[list(task.tags)] = 1.0
    try:
        image = read_image(Path(task.path), job.settings.read_side)
        return Decoded(task, image, vector, fingerprint.file_digest(task.path, 32))  # the bytes are in the page cache
    except ImageReadError as exc:
        return str(exc)
    except OSError as exc:  # vanished or became unreadable after decoding
        return f"cannot read the file ({exc.strerror or exc})"


def run_batch_or_singles(labeler: Labeler, batch: Sequence[tuple[ImageTask, Prepared]]
                         ) -> Iterator[tuple[ImageTask, list | str]]:
    """(task, model outputs or failure reason) for a batch; a failing batch is retried image by image, so
    only the image that breaks the model fails."""
    try:
        outputs = labeler.run_batch([item for _, item in batch])
    except Exception as exc:  # noqa: BLE001 - a runtime failure must not stop the folder
        if len(batch) == 1:
            yield batch[0][0], f"inference: {type(exc).__name__}: {exc}"
            return
        for single in batch:
            yield from run_batch_or_singles(labeler, [single])
        return
    yield from ((task, out) for (task, _), out in zip(batch, outputs))


class MaskWriter:
    """The write step: one image's mask (with the record of what made it), its companions (overlay,
    confidence map, CVAT colour mask) and its report record. Thread-safe; the same in every engine."""

    def __init__(self, job: LabelJob):
        self.job, self.layout, self.settings = job, job.layout, job.settings
        self.palette = companions.padded_palette(job.info.palette)

    def write(self, task: ImageTask, labelled: Labelled, rgb: np.ndarray, content: str) -> dict:
        """Write ``task``'s files from its finished labels (``content``: the image's digest, ``Decoded.content``);
        returns its report record."""
        if self.settings.confidence and labelled.confidence is None:
            raise RuntimeError("the image was finished without confidence (prepare it with the job's settings)")
        layout, made_with = self.layout, self.job.made_with(task, content)
        for stale in layout.companions(task.name):
            stale.unlink(missing_ok=True)  # the old mask's companions go before the new mask replaces it
        save_label_png(layout.mask(task.name), labelled.labels, self.palette, fingerprint.encode(made_with))
        # The report keeps what the mask records and the mask file's status, so a re-run of an unchanged folder
        # need not read the masks (``job.recorded_made_with``).
        record = {**mask_record(labelled.labels, self.job.info.classes, layout.mask_rel(task.name)),
                  "fingerprint": fingerprint.digest(made_with), "image": made_with["image"],
                  "settings_key": self.job.settings_key(task),
                  MASK_FILE: mask_status(layout.mask(task.name))}
        if labelled.zero_maps:
            record[ZERO_MAPS] = [self.job.info.classes[c] for c in labelled.zero_maps]
        if self.settings.confidence:
            companions.save_confidence_png(layout.confidence(task.name), labelled.confidence)
            record.update(confidence_record(labelled.confidence, layout.confidence_rel(task.name)))
        self._companions_from_mask(task, rgb, labelled.labels)
        return record

    def write_missing_companions(self, task: ImageTask) -> None:
        """A kept mask's missing outputs that are made from the mask alone: its overlay (``overlay``) and its
        CVAT colour mask (``cvat``), on a re-run."""
        labels = load_label_png(self.layout.mask(task.name))
        missing = self.job.companions_missing(task)
        if "cvat" in missing:
            companions.save_colour_png(self.layout.cvat(task.name), labels, self.palette)
        if "overlay" in missing:
            self._overlay(task, read_image(Path(task.path), self.settings.max_side).rgb, labels)

    def _companions_from_mask(self, task: ImageTask, rgb: np.ndarray, labels: np.ndarray) -> None:
        if "cvat" in self.settings.formats:
            companions.save_colour_png(self.layout.cvat(task.name), labels, self.palette)
        if self.settings.overlay:
            self._overlay(task, rgb, labels)

    def _overlay(self, task: ImageTask, rgb: np.ndarray, labels: np.ndarray) -> None:
        # Previews use the working resolution, at most max_side (tiled images are decoded at full size).
        data = companions.overlay_jpeg(rgb, labels, self.palette, self.job.info.classes, self.settings.max_side)
        atomic_write_bytes(self.layout.overlay(task.name), data)
