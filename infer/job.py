"""A labelling job, decided before any work, whichever engine runs it.

``open_job`` makes every check a user can fail (OUTPUT, the formats' libraries, the inputs, the tags, the
model and the settings against it), lists the images and gives each its name (``layout.assign_names``) and
tags: the result is a ``LabelJob`` (a small picklable description that the engines hand to their workers
whole) and its ``ImageTask`` list. ``plan_job`` then decides which masks of an earlier run are still valid
(kept) and which to label, and why.
"""
from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from aesipe.contract import ModelInfo
from aesipe.tags import read_tags_csv
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import load_label_png

from . import fingerprint
from .companions import check_cvat_palette, load_confidence_png, require_pycocotools
from .inputs import resolve_inputs
from .labeler import Labeler
from .layout import ImageTask, OutputLayout, assign_names
from .report import MASK_FILE, Report, confidence_record, mask_record
from .session import check_model_path
from .settings import LabelSettings


@dataclass(frozen=True)
class LabelJob:
    """What every engine and worker needs to know about a job (picklable; no session, no image list)."""

    model_path: Path
    """Absolute path of the model file."""
    model_id: str
    """The model file's content hash: part of every mask's record."""
    info: ModelInfo
    output_dir: Path
    """Absolute path of OUTPUT."""
    settings: LabelSettings
    input_spec: str
    """INPUT as the user gave it (the sheet's title)."""

    @functools.cached_property
    def layout(self) -> OutputLayout:
        return OutputLayout(self.output_dir)

    @functools.cached_property
    def _mask_record(self) -> dict:
        return self.settings.mask_record()

    @functools.cached_property
    def _settings_keys(self) -> dict:
        return {}

    def settings_key(self, task: ImageTask) -> str:
        """A short digest of what a mask of ``task`` is made from besides the image (model, settings, tags): equal
        keys, equal ``made_with`` but for the image. One per tag set (computed once)."""
        key = self._settings_keys.get(task.tags)
        if key is None:
            key = self._settings_keys[task.tags] = fingerprint.digest(self.made_with(task))
        return key

    def made_with(self, task: ImageTask, content: str | None = None) -> dict:
        """The record a mask of ``task`` made now carries (``fingerprint.py``); without the image's ``content``
        digest, the part that is compared before the image is looked at."""
        image = fingerprint.image_identity(task.path, content) if content else None
        return fingerprint.made_with(self.model_id, self._mask_record, task.tags, image)

    def companions_missing(self, task: ImageTask) -> list[str]:
        """The per-image outputs the settings ask for that a mask on disk lacks: ``confidence`` (needs the
        scores: the mask is redone), ``overlay`` and ``cvat`` (made from the mask)."""
        s, layout, missing = self.settings, self.layout, []
        if s.confidence and not layout.confidence(task.name).is_file():
            missing.append("confidence")
        if s.overlay and not layout.overlay(task.name).is_file():
            missing.append("overlay")
        if "cvat" in s.formats and not layout.cvat(task.name).is_file():
            missing.append("cvat")
        return missing


@dataclass
class Plan:
    todo: list[ImageTask] = field(default_factory=list)
    kept: list[ImageTask] = field(default_factory=list)
    redo_reasons: dict[str, int] = field(default_factory=dict)
    companions_missing: list[ImageTask] = field(default_factory=list)
    """Kept masks that lack an output made from the mask alone (overlay, CVAT colour mask)."""

    def describe(self) -> str:
        line = f"{len(self.todo) + len(self.kept)} images: {len(self.kept)} masks still valid, {len(self.todo)} to label"
        if self.redo_reasons:
            reasons = ", ".join(f"{count} made with {why}" if why.startswith(("another", "other")) else f"{count} {why}"
                                for why, count in sorted(self.redo_reasons.items()))
            line += f" (redone: {reasons})"
        return line


def check_output_folder(output_dir: Path) -> None:
    """OUTPUT must be a folder we can write (or create): checked before any work, creating nothing, so a
    usage error found later leaves no empty folder behind."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"OUTPUT {output_dir} is a file: give a folder (it is created if missing)")
    existing = output_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write into OUTPUT {output_dir}: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        where = "" if existing == output_dir else f" (in {existing})"
        raise UserError(f"cannot write into OUTPUT {output_dir}{where}: {exc.strerror or exc}") from None


def open_job(model_path: str | Path, input_spec: str | Path, output_dir: str | Path, settings: LabelSettings,
             open_labeler: Callable[[Path, LabelSettings], Labeler], log: Callable[[str], None]
             ) -> tuple[LabelJob, Labeler, list[ImageTask]]:
    """Every check before work, the model opened (``open_labeler``: the engine's way), the images named;
    OUTPUT is created only once all of it passed."""
    model_path = check_model_path(model_path, input_spec)
    output_dir = Path(os.path.abspath(output_dir))
    if "coco" in settings.formats:
        require_pycocotools()
    check_output_folder(output_dir)
    layout = OutputLayout(output_dir)
    images = resolve_inputs(input_spec, exclude=layout.folders())
    if not images:
        raise UserError(f"no images in {input_spec} (looked for .jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp)")
    labeler = open_labeler(Path(model_path), settings)
    info = labeler.info
    if "cvat" in settings.formats:
        check_cvat_palette(info.classes, labeler.palette)
    if settings.reviewed is not None:
        from .reviewed import open_store

        open_store(settings.reviewed, info)  # a wrong folder or other classes: said before any work
    tags = read_tags_csv(settings.tags_csv, info.classes[1:]) if settings.tags_csv else None  # read: a bad file fails
    if info.needs_tags and tags is None:
        raise UserError("this model is a pseudo-labeller: give the images' tags with --tags CSV (image,labels)")
    if tags is not None and not info.needs_tags:
        log(f"warning: --tags {settings.tags_csv} is not used: this model is a segmenter, which labels every class "
            "it knows without tags")
        tags = None
    names = assign_names(image.rel for image in images)
    tasks = [ImageTask(image.rel, os.path.abspath(image.path), names[image.rel],
                       tags.lookup(image.rel) if tags is not None else None) for image in images]
    del images  # the tasks hold what is needed; at a million images every byte per image counts
    output_dir.mkdir(parents=True, exist_ok=True)
    model_path = Path(os.path.abspath(model_path))
    job = LabelJob(model_path, fingerprint.file_digest(model_path), info, output_dir, settings, str(input_spec))
    return job, labeler, tasks


def mask_status(mask: Path) -> list[int] | None:
    """What a report record holds of its mask file (size, mtime), or None if there is no mask file."""
    try:
        status = os.stat(mask)
    except OSError:
        return None
    return [status.st_size, status.st_mtime_ns]


def plan_job(job: LabelJob, tasks: list[ImageTask], report: Report) -> Plan:
    """Which masks an earlier run wrote that are still valid (kept, their records set in ``report``) and
    which to (re)do."""
    plan, layout = Plan(), job.layout
    for task in tasks:
        mask = layout.mask(task.name)
        status = None if job.settings.overwrite else mask_status(mask)
        if status is None:
            plan.todo.append(task)
            continue
        previous = report.images.get(task.rel)
        key = job.settings_key(task)
        # The report's record stands for what the mask records while the mask file is the one it describes
        # (same size and mtime) and it was made with today's model, settings and tags: then no mask is read, and
        # only the image is looked at. Otherwise the mask's own record decides.
        known = bool(previous and previous.get("status") == "ok" and report.mask_file(task.rel) == status
                     and previous.get("settings_key") == key and isinstance(previous.get("image"), dict))
        recorded = None
        try:
            if known:
                why = fingerprint.image_changed(previous["image"], Path(task.path))
            else:
                recorded = fingerprint.read(mask)
                why = fingerprint.why_stale(recorded, job.made_with(task), Path(task.path))
        except OSError:  # the image vanished since the listing: it will fail with its reason
            why = "the image is unreadable"
        missing = job.companions_missing(task) if why is None else []
        if "confidence" in missing:
            why = "without a confidence map"
        if why is None:
            plan.kept.append(task)
            record = kept_record(job, task, previous)
            if not (known and record is previous and previous.get("resumed")):  # a no-op re-run rewrites no record
                image = previous["image"] if known else recorded["image"]
                report.set(task.rel, {**record, "resumed": True, "image": image, "settings_key": key,
                                      "fingerprint": previous["fingerprint"] if known else fingerprint.digest(recorded),
                                      MASK_FILE: status})
            if missing:
                plan.companions_missing.append(task)
        else:
            plan.todo.append(task)
            plan.redo_reasons[why] = plan.redo_reasons.get(why, 0) + 1
    return plan


def kept_record(job: LabelJob, task: ImageTask, previous: dict | None) -> dict:
    """The report record of a mask on disk that is kept: the earlier record if it was a success, else made
    from the mask (and its confidence map, if there is one)."""
    layout = job.layout
    record = previous if previous and previous.get("status") == "ok" else None
    if record is None:
        record = mask_record(load_label_png(layout.mask(task.name)), job.info.classes, layout.mask_rel(task.name))
    if not (job.settings.confidence or "confidence" in record):
        return record  # no confidence map asked for nor recorded: nothing to look for
    confidence = layout.confidence(task.name)
    if confidence.is_file():
        if "mean_confidence" not in record:
            record = {**record, **confidence_record(load_confidence_png(confidence), layout.confidence_rel(task.name))}
    else:
        record = {k: v for k, v in record.items() if k not in ("confidence", "mean_confidence", "uncertain_fraction")}
    return record
