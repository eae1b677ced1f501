"""The workers' side of ``--engine ray`` (``ray_engine`` has the whole design): the decode tasks and the labelling
actors. Both run the steps of ``steps.py`` for the job's ``LabelJob``, which every worker gets whole; each keeps
a try journal in OUTPUT, so a process that dies on an image is retried and, if it keeps dying, that image fails
alone."""
from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from aesipe.imaging import DecodedImage
from aesipe.utils.atomic import temporary_name

from . import fingerprint
from .items import Prepared
from .job import LabelJob, kept_record
from .labeler import Labeler
from .layout import ImageTask
from .steps import MaskWriter, decode, is_machine_fault, run_batch_or_singles

TRIES_PER_IMAGE = 3
"""Deaths of a process on one image before that image fails alone (decode tasks and actors alike)."""
_NO_RGB, _NO_TAGS = np.zeros((0, 0, 3), np.uint8), np.zeros(0, np.float32)


def _task(row: dict) -> ImageTask:
    fields = json.loads(str(row["task"]))
    tags = fields.pop("tags")
    return ImageTask(**fields, tags=None if tags is None else tuple(tags))


def journal_path(output_dir: Path, token: str, *parts: str) -> Path:
    """The try counter of one piece of this run's work (``parts``) in OUTPUT: an aesipe temporary file, so a
    killed run's are removed by the next run with the others."""
    key = hashlib.sha256("\n".join([token, *parts]).encode()).hexdigest()[:16]
    return temporary_name(output_dir, f"ray-{key}.tmp")


class TryJournal:
    """Counts the tries of one piece of work in a file: a try that kills its process leaves the count behind."""

    def __init__(self, output_dir: Path, token: str, *parts: str):
        self.path = journal_path(output_dir, token, *parts)

    def tries_so_far(self) -> int:
        try:
            return int(self.path.read_text() or 1)
        except FileNotFoundError:
            return 0
        except ValueError:  # cut off while being written: that try died too
            return 1

    def start(self, tries: int) -> None:
        self.path.write_text(str(tries + 1))

    def done(self) -> None:
        self.path.unlink(missing_ok=True)


def decode_task(row: dict, state: dict) -> dict:
    """Ray Data task: one image read and decoded (or a kept mask's missing companions written)."""
    job: LabelJob = state["job"]
    task, started = _task(row), time.perf_counter()
    out = {**row, "rgb": _NO_RGB, "size": np.zeros(2, np.int64), "tags": _NO_TAGS, "content": "", "error": ""}
    journal = TryJournal(job.output_dir, state["token"], "decode", str(row["kind"]), task.rel)
    tries = journal.tries_so_far()
    if tries >= TRIES_PER_IMAGE:
        journal.done()
        return {**out, "error": f"the decoding process died on it {tries} times", "decode_s": 0.0}
    journal.start(tries)
    if row["kind"] == "overlay":
        try:
            MaskWriter(job).write_missing_companions(task)
        except Exception as exc:  # the mask is fine; say why its preview is missing (as locally)
            out["error"] = f"{type(exc).__name__}: {exc}"
    else:
        result = decode(task, job)
        if isinstance(result, str):
            out["error"] = result
        else:
            out.update(rgb=result.image.rgb, size=np.array(result.image.original_size, np.int64),
                       tags=_NO_TAGS if result.tags is None else result.tags, content=result.content)
    journal.done()
    return {**out, "decode_s": time.perf_counter() - started}


def written_this_run(job: LabelJob, task: ImageTask, started_ns: int) -> dict | None:
    """The record of a mask this run already wrote with all its companions (an earlier try of a retried
    batch), as ``MaskWriter.write`` returned it, else None."""
    mask = job.layout.mask(task.name)
    try:
        if mask.stat().st_mtime_ns < started_ns:
            return None
        recorded = fingerprint.read(mask)
        if fingerprint.why_stale(recorded, job.made_with(task), Path(task.path)) is not None or job.companions_missing(task):
            return None
        return {**kept_record(job, task, None), "fingerprint": fingerprint.digest(recorded)}
    except Exception:  # missing, unreadable, half-written companions: label it again
        return None


class LabelActor:
    """One ONNX Runtime session; prepares, runs, finishes and writes a batch of decoded images."""

    def __init__(self, state: dict, device: str, threads: int) -> None:
        job: LabelJob = state["job"]
        # An actor runs one batch at a time (one stream): Ray's actors are its streams.
        self.labeler = Labeler(job.model_path, job.settings.replace(device=device, threads=threads, providers=None))
        self.job, self.writer = job, MaskWriter(job)
        self.started_ns, self.token = state["started_ns"], state["token"]
        self.engine = json.dumps({"providers": self.labeler.providers, "fallback": self.labeler.fallback})

    def write(self, task: ImageTask, rgb: np.ndarray, content: str, item: Prepared, outputs: list) -> dict:
        """The finish and write steps of one image; its record (a failure's reason, as locally)."""
        try:
            return self.writer.write(task, self.labeler.finish(item, outputs), rgb, content)
        except Exception as exc:  # one bad image must not stop the folder
            if is_machine_fault(exc):
                raise  # a full disk is no image's fault: the job stops, and the driver says so
            return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}

    def _label(self, chunk: list[tuple[ImageTask, tuple[np.ndarray, str, Prepared]]], records: dict, seconds: dict) -> None:
        rels = [task.rel for task, _ in chunk]
        journal = TryJournal(self.job.output_dir, self.token, "label", *rels)
        tries = journal.tries_so_far()
        if tries and len(chunk) > 1:  # the process died on this batch: find the image that kills it
            for single in chunk:
                self._label([single], records, seconds)
            journal.done()
            return
        if tries >= TRIES_PER_IMAGE:
            records[rels[0]] = {"status": "failed", "reason": f"the labelling process died on it {tries} times"}
            journal.done()
            return
        journal.start(tries)
        began = time.perf_counter()
        items = {task.rel: pair for task, pair in chunk}
        results = list(run_batch_or_singles(self.labeler, [(task, pair[-1]) for task, pair in chunk]))
        share = (time.perf_counter() - began) / len(chunk)
        for task, outputs in results:
            began = time.perf_counter()
            records[task.rel] = ({"status": "failed", "reason": outputs} if isinstance(outputs, str)
                                 else self.write(task, *items[task.rel], outputs))
            seconds[task.rel][1:] = [share, time.perf_counter() - began]
        journal.done()

    def __call__(self, batch: dict) -> dict:
        rows = [{key: batch[key][i] for key in batch} for i in range(len(batch["rel"]))]
        records: dict[str, dict] = {}
        seconds = {str(r["rel"]): [float(r["decode_s"]), 0.0, 0.0] for r in rows}
        buckets: dict[tuple, list] = defaultdict(list)
        for row in rows:
            task, error = _task(row), str(row["error"])
            if row["kind"] == "overlay":
                records[task.rel] = {"overlay_error": error} if error else {}
            elif error:
                records[task.rel] = {"status": "failed", "reason": error}
            elif (done := written_this_run(self.job, task, self.started_ns)) is not None:
                records[task.rel] = done
            else:
                rgb = row["rgb"] if row["rgb"].flags.writeable else row["rgb"].copy()  # the CRF writes into it
                decoded = DecodedImage(rgb, tuple(int(s) for s in row["size"]))
                item = self.labeler.prepare(decoded, row["tags"] if self.job.info.needs_tags else None)
                buckets[item.batch_key].append((task, (rgb, str(row["content"]), item)))
        size = self.job.settings.batch_size
        for bucket in buckets.values():  # batched only with images of the same batch_key, as locally
            for start in range(0, len(bucket), size):
                self._label(bucket[start:start + size], records, seconds)
        rels = [str(r["rel"]) for r in rows]
        return {"rel": rels, "kind": [str(r["kind"]) for r in rows], "record": [json.dumps(records[r]) for r in rels],
                "engine": [self.engine] * len(rels), "seconds": [seconds[r] for r in rels]}
