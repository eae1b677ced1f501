"""One labelling job, whatever runs it: the checks before any work, the plan (which masks are still valid,
which to redo and why), and the per-image steps -- read and prepare, finish and write -- that the local
engine (``folder.py``) runs in threads and the Ray engine runs in tasks and actors.

Outputs (all written atomically, with the permissions of the user's umask): ``OUTPUT/masks/<name>.png``
(palette PNG of class indices at the image's size, with the record of what made it, see
``fingerprint.py``), ``OUTPUT/overlays/<name>.jpg`` with ``overlay``, and ``OUTPUT/report.json``.
"""
from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from aesipe.tags import read_tags_csv
from aesipe.utils.atomic import atomic_write_bytes, remove_temporaries
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import load_label_png, save_label_png
from aesipe.utils.labelpng import overlay as blend

from . import fingerprint
from .api import Labeler, Prepared
from .inputs import InputImage, output_names, resolve_inputs
from .io import DEFAULT_MAX_SIDE, ImageReadError, read_image
from .report import REPORT_NAME, Report, mask_record

FAILURES_SHOWN = 5
OUTPUT_FOLDERS = ("masks", "overlays")
"""What aesipe-label writes under OUTPUT (never read back as input)."""


@dataclass(frozen=True)
class LabelOptions:
    """What the user chose (the flags of ``aesipe-label``)."""

    tags_csv: Path | None = None
    overlay: bool = False
    crf: bool = False
    batch_size: int = 4
    device: str = "auto"
    half: bool = False
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    overwrite: bool = False
    workers: int | None = None
    max_side: int | None = DEFAULT_MAX_SIDE
    threads: int | None = None
    providers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UserError("--batch-size must be at least 1")
        if self.workers is not None and self.workers < 1:
            raise UserError("--workers must be at least 1")
        if self.max_side is not None and self.max_side < 16:
            raise UserError("--max-side must be at least 16")
        if self.threads is not None and self.threads < 1:
            raise UserError("--threads must be at least 1")

    def mask_settings(self) -> dict:
        """The options that change a mask (part of its fingerprint)."""
        return {"scales": list(self.scales), "flip": self.flip, "crf": self.crf, "max_side": self.max_side}


@dataclass
class Plan:
    todo: list[InputImage] = field(default_factory=list)
    kept: list[InputImage] = field(default_factory=list)
    redo_reasons: dict[str, int] = field(default_factory=dict)
    overlays_missing: list[InputImage] = field(default_factory=list)

    def describe(self) -> str:
        line = f"{len(self.todo) + len(self.kept)} images: {len(self.kept)} masks still valid, {len(self.todo)} to label"
        if self.redo_reasons:
            reasons = ", ".join(f"{count} made with {why}" if why.startswith(("another", "other")) else f"{count} {why}"
                                for why, count in sorted(self.redo_reasons.items()))
            line += f" (redone: {reasons})"
        return line


def check_output_folder(output_dir: Path) -> None:
    """OUTPUT must be a folder we can write: checked before any image is processed."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"OUTPUT {output_dir} is a file: give a folder (it is created if missing)")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as exc:
        raise UserError(f"cannot write into OUTPUT {output_dir}: {exc.strerror or exc}") from None


class LabelJob:
    def __init__(self, model_path: str | Path, input_spec: str | Path, output_dir: str | Path,
                 options: LabelOptions, log=print):
        self.output_dir = Path(output_dir)
        self.options, self.log = options, log
        check_output_folder(self.output_dir)
        self.images = resolve_inputs(input_spec, exclude=tuple(self.output_dir / name for name in OUTPUT_FOLDERS))
        if not self.images:
            raise UserError(f"no images in {input_spec} (looked for .jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp)")
        o = options
        self.labeler = Labeler(model_path, device=o.device, providers=o.providers, half=o.half, scales=o.scales,
                               flip=o.flip, crf=o.crf, max_side=o.max_side, threads=o.threads)
        self.info = self.labeler.info
        self.tags = read_tags_csv(o.tags_csv, self.info.classes[1:]) if o.tags_csv else None
        if self.info.needs_tags and self.tags is None:
            raise UserError("this model is a pseudo-labeller: give the images' tags with --tags CSV (image,labels)")
        self.model_path = Path(model_path)
        self.model_id = fingerprint.file_digest(self.model_path)
        self.names = output_names(self.images)
        for name in OUTPUT_FOLDERS:  # files a killed run was writing (finished files are never half-written)
            remove_temporaries(self.output_dir / name, recursive=True)
        remove_temporaries(self.output_dir)
        self.report = Report.load_previous(self.output_dir / REPORT_NAME)
        self.report.images = {k: v for k, v in self.report.images.items() if k in {str(i.rel) for i in self.images}}

    # -- paths ----------------------------------------------------------------------------------------
    def mask_rel(self, image: InputImage) -> str:
        return f"masks/{self.names[image.rel]}"

    def overlay_path(self, image: InputImage) -> Path:
        return self.output_dir / "overlays" / (self.names[image.rel][:-4] + ".jpg")

    def image_tags(self, image: InputImage) -> tuple[int, ...] | None:
        return self.tags.lookup(image.rel) if self.tags is not None else None

    def expected(self, image: InputImage) -> dict:
        return fingerprint.made_with(self.model_id, self.options.mask_settings(), self.image_tags(image), image.path)

    # -- the plan ---------------------------------------------------------------------------------------
    def plan(self) -> Plan:
        """Which masks a previous run wrote that are still valid (kept) and which to (re)do."""
        plan = Plan()
        for image in self.images:
            mask = self.output_dir / self.mask_rel(image)
            if self.options.overwrite or not mask.is_file():
                plan.todo.append(image)
                continue
            try:
                why = fingerprint.why_stale(fingerprint.read(mask), self.expected(image))
            except OSError:  # the image vanished since the listing: it will fail with its reason
                why = "the image is unreadable"
            if why is None:
                plan.kept.append(image)
                record = self.report.images.get(str(image.rel))
                if not (record and record.get("status") == "ok"):
                    record = mask_record(load_label_png(mask), self.info.classes, self.mask_rel(image))
                self.report.set(str(image.rel), {**record, "resumed": True})
                if self.options.overlay and not self.overlay_path(image).is_file():
                    plan.overlays_missing.append(image)
            else:
                plan.todo.append(image)
                plan.redo_reasons[why] = plan.redo_reasons.get(why, 0) + 1
        return plan

    # -- per image ----------------------------------------------------------------------------------------
    def prepare(self, image: InputImage) -> Prepared | str:
        """The image read and made ready for the model, or the reason it cannot be labelled."""
        vector = None
        if self.info.needs_tags:
            indices = self.image_tags(image)
            if indices is None:
                return f"no row for this image in {self.options.tags_csv}"
            vector = np.zeros(self.info.num_classes, dtype=np.float32)
            vector[list(indices)] = 1.0
        try:
            return self.labeler.prepare(read_image(image.path, self.options.max_side), vector)
        except ImageReadError as exc:
            return str(exc)

    def write(self, image: InputImage, item: Prepared, outputs: list[np.ndarray]) -> dict:
        """Finish one image's labels and write its files; returns its report record."""
        labels = self.labeler.finish(item, outputs)
        mask_rel = self.mask_rel(image)
        record = self.expected(image)
        save_label_png(self.output_dir / mask_rel, labels, self.labeler.palette, fingerprint.encode(record))
        if self.options.overlay:
            self._write_overlay(image, item.decoded.rgb, labels)
        return {**mask_record(labels, self.info.classes, mask_rel), "fingerprint": fingerprint.digest(record)}

    def write_missing_overlay(self, image: InputImage) -> None:
        """An overlay for a kept mask (a re-run with ``--overlay``)."""
        decoded = read_image(image.path, self.options.max_side)
        self._write_overlay(image, decoded.rgb, load_label_png(self.output_dir / self.mask_rel(image)))

    def _write_overlay(self, image: InputImage, rgb: np.ndarray, labels: np.ndarray) -> None:
        from PIL import Image

        from .postprocess import resize_labels_nearest

        small = resize_labels_nearest(labels, *rgb.shape[:2])  # previews use the working resolution
        buffer = io.BytesIO()
        Image.fromarray(blend(rgb, small, self.labeler.palette)).save(buffer, format="JPEG", quality=90)
        atomic_write_bytes(self.overlay_path(image), buffer.getvalue())

    # -- the end ------------------------------------------------------------------------------------------------
    def failure_lines(self) -> list[str]:
        """The first few failures with their reasons, then a count (for the console)."""
        failed = [(rel, r.get("reason", "")) for rel, r in sorted(self.report.images.items()) if r.get("status") == "failed"]
        lines = [f"failed: {rel}: {reason}" for rel, reason in failed[:FAILURES_SHOWN]]
        if len(failed) > FAILURES_SHOWN:
            lines.append(f"... and {len(failed) - FAILURES_SHOWN} more failures (see {self.report.path})")
        return lines

    def summary(self, processed: int, seconds: float, timer: dict[str, float], extra: dict | None = None) -> dict:
        o = self.options
        return {
            "model": str(self.model_path), "model_sha256_16": self.model_id, "model_kind": self.info.model_kind,
            "providers": self.labeler.providers, "provider_fallback": self.labeler.fallback,
            "processed_this_run": processed, "resumed": sum(1 for r in self.report.images.values() if r.get("resumed")),
            "seconds": round(seconds, 3),
            "images_per_second": round(processed / seconds, 3) if seconds > 0 and processed else None,
            "stage_busy_seconds": {k: round(v, 3) for k, v in timer.items()},
            "options": {"batch_size": o.batch_size, **o.mask_settings(), "scales": list(self.labeler.scales),
                        "workers": o.workers or default_workers(), "overlay": o.overlay},
            **(extra or {}),
        }


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def run_batch_or_singles(labeler: Labeler, batch: Sequence[tuple[InputImage, Prepared]]):
    """Yield (image, outputs or failure reason) for a batch; a failing batch is retried image by image, so
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
    yield from ((image, out) for (image, _), out in zip(batch, outputs))
