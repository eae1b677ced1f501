"""One labelling job, whatever runs it: the checks before any work, the plan (which masks are still valid,
which to redo and why), the per-image steps -- read and prepare, finish and write -- that the local
engine (``folder.py``) runs in threads and the Ray engine runs in tasks and actors, and ``finalize``, which
makes the outputs that gather every image once the images are done.

Outputs (all written atomically, with the permissions of the user's umask): ``OUTPUT/masks/<name>.png``
(palette PNG of class indices at the image's size, with the record of what made it, see
``fingerprint.py``), with ``overlay`` ``OUTPUT/overlays/<name>.jpg``, with ``confidence``
``OUTPUT/confidence/<name>.png``, with format ``cvat`` ``OUTPUT/SegmentationClass/<name>.png`` (written per
image, ``outputs.py``); ``OUTPUT/report.json``; and from ``finalize``: ``annotations.json`` (coco),
``labelmap.txt`` + ``ImageSets/Segmentation/default.txt`` (cvat), ``review.csv`` (confidence) and
``sheet.html`` + ``sheet/`` (sheet). A mask that is rewritten takes its old per-image companions with it,
so an overlay or confidence map never outlives the mask it was made from.
"""
from __future__ import annotations

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

from . import fingerprint, outputs
from .api import Labeler
from .inputs import InputImage, output_names, resolve_inputs
from .io import ImageReadError, read_image
from .items import Prepared
from .options import LabelOptions, labeler_for
from .report import REPORT_NAME, Report, confidence_record, mask_record

FAILURES_SHOWN = 5
OUTPUT_FOLDERS = ("masks", "overlays", "confidence", "SegmentationClass", "ImageSets", "sheet")
"""What aesipe-label writes under OUTPUT (never read back as input)."""


@dataclass
class Plan:
    todo: list[InputImage] = field(default_factory=list)
    kept: list[InputImage] = field(default_factory=list)
    redo_reasons: dict[str, int] = field(default_factory=dict)
    overlays_missing: list[InputImage] = field(default_factory=list)
    """Kept masks that lack an output made from the mask alone (overlay, CVAT colour mask)."""

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
        if "coco" in options.formats:
            outputs.require_pycocotools()
        check_output_folder(self.output_dir)
        self.images = resolve_inputs(input_spec, exclude=tuple(self.output_dir / name for name in OUTPUT_FOLDERS))
        if not self.images:
            raise UserError(f"no images in {input_spec} (looked for .jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp)")
        o = options
        self.labeler = labeler_for(model_path, o)
        self.info = self.labeler.info
        if o.streams is not None and o.streams != self.labeler.streams:
            where = "a GPU" if self.labeler.backend.on_gpu else "a TorchScript file"
            log(f"warning: --streams {o.streams}: {where} runs one model call at a time")
        self.palette = outputs.padded_palette(self.labeler.palette)
        if "cvat" in o.formats:
            outputs.check_cvat_palette(self.info.classes, self.palette)
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

    def confidence_rel(self, image: InputImage) -> str:
        return f"confidence/{self.names[image.rel]}"

    def cvat_path(self, image: InputImage) -> Path:
        return self.output_dir / "SegmentationClass" / self.names[image.rel]

    def image_tags(self, image: InputImage) -> tuple[int, ...] | None:
        return self.tags.lookup(image.rel) if self.tags is not None else None

    def expected(self, image: InputImage) -> dict:
        return fingerprint.made_with(self.model_id, self.options.mask_settings(), self.image_tags(image), image.path)

    def outputs_missing(self, image: InputImage) -> list[str]:
        """The per-image outputs the options ask for that a mask on disk lacks: ``confidence`` (needs the
        scores: the mask is redone), ``overlay`` and ``cvat`` (made from the mask)."""
        o, missing = self.options, []
        if o.confidence and not (self.output_dir / self.confidence_rel(image)).is_file():
            missing.append("confidence")
        if o.overlay and not self.overlay_path(image).is_file():
            missing.append("overlay")
        if "cvat" in o.formats and not self.cvat_path(image).is_file():
            missing.append("cvat")
        return missing

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
            missing = self.outputs_missing(image) if why is None else []
            if "confidence" in missing:
                why = "without a confidence map"
            if why is None:
                plan.kept.append(image)
                self.report.set(str(image.rel), {**self._kept_record(image, mask), "resumed": True})
                if missing:
                    plan.overlays_missing.append(image)
            else:
                plan.todo.append(image)
                plan.redo_reasons[why] = plan.redo_reasons.get(why, 0) + 1
        return plan

    def _kept_record(self, image: InputImage, mask: Path) -> dict:
        record = self.report.images.get(str(image.rel))
        if not (record and record.get("status") == "ok"):
            record = mask_record(load_label_png(mask), self.info.classes, self.mask_rel(image))
        conf_rel = self.confidence_rel(image)
        if (self.output_dir / conf_rel).is_file():
            if "mean_confidence" not in record:
                record = {**record, **confidence_record(outputs.load_confidence_png(self.output_dir / conf_rel), conf_rel)}
        else:
            record = {k: v for k, v in record.items() if k not in ("confidence", "mean_confidence", "uncertain_fraction")}
        return record

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
        side = None if self.options.tile is not None else self.options.max_side  # tiles see full resolution
        try:
            return self.labeler.prepare(read_image(image.path, side), vector)
        except ImageReadError as exc:
            return str(exc)

    def write(self, image: InputImage, item: Prepared, model_outputs: list) -> dict:
        """Finish one image's labels and write its files; returns its report record."""
        self._check_labeler()
        result = self.labeler.finish_scored(item, model_outputs)
        if self.options.confidence and result.confidence is None:
            raise RuntimeError("the image was prepared without confidence (use job.prepare or labeler_for)")
        labels, mask_rel, made_with = result.labels, self.mask_rel(image), self.expected(image)
        for stale in (self.overlay_path(image), self.output_dir / self.confidence_rel(image), self.cvat_path(image)):
            stale.unlink(missing_ok=True)  # the old mask's companions go before the new mask replaces it
        save_label_png(self.output_dir / mask_rel, labels, self.labeler.palette, fingerprint.encode(made_with))
        record = {**mask_record(labels, self.info.classes, mask_rel), "fingerprint": fingerprint.digest(made_with)}
        if self.options.confidence:
            conf_rel = self.confidence_rel(image)
            outputs.save_confidence_png(self.output_dir / conf_rel, result.confidence)
            record.update(confidence_record(result.confidence, conf_rel))
        self._write_companions(image, item.decoded.rgb, labels)
        return record

    def _check_labeler(self) -> None:
        """A mask's record names the options; a Labeler built from other ones would make it lie."""
        o, labeler = self.options, self.labeler
        if (labeler.tile, labeler.tile_overlap, labeler.confidence) != (o.tile, o.tile_overlap, o.confidence) or (
                o.classes is not None) != (labeler.keep is not None):
            raise RuntimeError("this engine's Labeler was not built from the job's options: build it with "
                               "options.labeler_for(model, options)")

    def write_missing_overlay(self, image: InputImage) -> None:
        """The outputs a kept mask lacks that are made from the mask alone: its overlay (``--overlay``) and its
        CVAT colour mask (``--format cvat``), on a re-run."""
        labels = load_label_png(self.output_dir / self.mask_rel(image))
        missing = self.outputs_missing(image)
        if "cvat" in missing:
            outputs.save_colour_png(self.cvat_path(image), labels, self.palette)
        if "overlay" in missing:
            self._write_overlay(image, read_image(image.path, self.options.max_side).rgb, labels)

    def _write_companions(self, image: InputImage, rgb: np.ndarray, labels: np.ndarray) -> None:
        if "cvat" in self.options.formats:
            outputs.save_colour_png(self.cvat_path(image), labels, self.palette)
        if self.options.overlay:
            self._write_overlay(image, rgb, labels)

    def _write_overlay(self, image: InputImage, rgb: np.ndarray, labels: np.ndarray) -> None:
        # Previews use the working resolution, at most --max-side (tiled images are decoded at full size).
        data = outputs.overlay_jpeg(rgb, labels, self.palette, self.info.classes, self.options.max_side)
        atomic_write_bytes(self.overlay_path(image), data)

    # -- the end ------------------------------------------------------------------------------------------------
    def finalize(self) -> list[Path]:
        """The outputs that gather every image, made from the written files and ``self.report`` alone (so any
        engine calls it once the images are done; kept masks of earlier runs are included). Returns them."""
        return outputs.finalize_job(self)

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
                        "workers": o.workers or default_workers(), "streams": self.labeler.streams,
                        "threads_per_stream": self.labeler.backend.threads, "overlay": o.overlay, "confidence": o.confidence,
                        "formats": list(o.formats), "sheet": o.sheet},
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
