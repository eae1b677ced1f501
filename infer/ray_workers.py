"""The workers' side of ``--engine ray`` (``ray_engine`` has the whole design): the decode tasks and the labelling
actors, each with its try journal in OUTPUT, so a process that dies on an image is retried and, if it keeps
dying, that image fails alone."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np

from aesipe.tags import read_tags_csv

from . import fingerprint
from .inputs import InputImage
from .io import DecodedImage
from .items import Prepared
from .job import LabelJob, run_batch_or_singles
from .options import labeler_for
from .report import REPORT_NAME, Report

TRIES_PER_IMAGE = 3
"""Deaths of a process on one image before that image fails alone (decode tasks and actors alike)."""
_NO_RGB, _NO_TAGS = np.zeros((0, 0, 3), np.uint8), np.zeros(0, np.float32)


@functools.lru_cache(maxsize=2)
def _tag_table(path: str, mtime_ns: int, classes: tuple[str, ...]):
    return read_tags_csv(path, classes)  # once per worker process, not per task


def _worker_job(state: dict, labeler) -> LabelJob:
    """A LabelJob without its ``__init__``: listing the inputs, the plan and removing a killed run's temporary
    files are the driver's alone (a worker doing the last would take files from under the other workers)."""
    job = LabelJob.__new__(LabelJob)
    job.__dict__.update(state["job"])
    job.labeler, job.names, job.log = labeler, {}, lambda line: None
    job.report = Report(job.output_dir / REPORT_NAME)  # empty, never written: records go back to the driver
    tags = state["tags_path"]
    job.tags = _tag_table(tags, os.stat(tags).st_mtime_ns, tuple(job.info.classes[1:])) if tags else None
    return job


class _DecodeOnly:
    """Stands in for the Labeler in the decode tasks: ``job.prepare`` reads the image and finds its tags there,
    and stops before the model inputs, which the actor builds (``Labeler.prepare`` of the decoded image)."""

    @staticmethod
    def prepare(decoded: DecodedImage, tags: np.ndarray | None) -> Prepared:
        return Prepared(decoded, tags)


_decode_jobs: dict[str, LabelJob] = {}


def _image(row: dict) -> InputImage:
    return InputImage(PurePosixPath(str(row["rel"])), Path(str(row["path"])))


def journal_path(output_dir: Path, token: str, *parts: str) -> Path:
    """The try counter of one piece of this run's work (``parts``) in OUTPUT; a killed run's are removed by the
    next one with the other temporary files."""
    key = hashlib.sha256("\n".join([token, *parts]).encode()).hexdigest()[:16]
    return output_dir / f".aesipe-ray-{key}.tmp"


def tries_so_far(journal: Path) -> int:
    try:
        return int(journal.read_text() or 1)
    except FileNotFoundError:
        return 0
    except ValueError:  # cut off while being written: that try died too
        return 1


def decode(row: dict, state: dict) -> dict:
    """Ray Data task: one image read and decoded (or a kept mask's missing overlay written)."""
    if state["token"] not in _decode_jobs:
        _decode_jobs.clear()
        _decode_jobs[state["token"]] = _worker_job(state, _DecodeOnly())
    job, image, started = _decode_jobs[state["token"]], _image(row), time.perf_counter()
    job.names = {image.rel: row["name"]}
    out = {**row, "rgb": _NO_RGB, "size": np.zeros(2, np.int64), "tags": _NO_TAGS, "error": ""}
    journal = journal_path(job.output_dir, state["token"], "decode", row["kind"], str(image.rel))
    tries = tries_so_far(journal)
    if tries >= TRIES_PER_IMAGE:
        journal.unlink(missing_ok=True)
        return {**out, "error": f"the decoding process died on it {tries} times", "decode_s": 0.0}
    journal.write_text(str(tries + 1))
    if row["kind"] == "overlay":
        try:
            job.write_missing_overlay(image)
        except Exception as exc:  # the mask is fine; say why its preview is missing (as locally)
            out["error"] = f"{type(exc).__name__}: {exc}"
    else:
        result = job.prepare(image)
        if isinstance(result, str):
            out["error"] = result
        else:
            out.update(rgb=result.decoded.rgb, size=np.array(result.decoded.original_size, np.int64),
                       tags=_NO_TAGS if result.tags is None else result.tags)
    journal.unlink(missing_ok=True)
    return {**out, "decode_s": time.perf_counter() - started}


def written_this_run(job: LabelJob, image: InputImage, started_ns: int) -> dict | None:
    """The record of a mask this run already wrote with all its per-image companions (an earlier try of a
    retried batch), as ``job.write`` returned it, else None."""
    mask = job.output_dir / job.mask_rel(image)
    try:
        if mask.stat().st_mtime_ns < started_ns:
            return None
        expected = job.expected(image)
        if fingerprint.why_stale(fingerprint.read(mask), expected) is not None or job.outputs_missing(image):
            return None
        return {**job._kept_record(image, mask), "fingerprint": fingerprint.digest(expected)}
    except Exception:  # missing, unreadable, half-written companions: label it again
        return None


class LabelActor:
    """One ONNX Runtime session; labels a batch of decoded images and writes their files."""

    def __init__(self, state: dict, device: str, threads: int) -> None:
        labeler = labeler_for(state["job"]["model_path"], state["job"]["options"], device=device, threads=threads,
                              streams=1)  # an actor runs one batch at a time: Ray's actors are its streams
        self.job, self.started_ns, self.token = _worker_job(state, labeler), state["started_ns"], state["token"]
        self.engine = json.dumps({"providers": labeler.providers, "fallback": labeler.fallback})

    def write(self, image: InputImage, item: Prepared, outputs) -> dict:
        try:
            return self.job.write(image, item, outputs)
        except Exception as exc:  # one bad image must not stop the folder (as locally)
            return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}

    def _label(self, chunk: list[tuple[InputImage, Prepared]], records: dict, seconds: dict) -> None:
        rels = [str(image.rel) for image, _ in chunk]
        journal = journal_path(self.job.output_dir, self.token, "label", *rels)
        tries = tries_so_far(journal)
        if tries and len(chunk) > 1:  # the process died on this batch: find the image that kills it
            for single in chunk:
                self._label([single], records, seconds)
            journal.unlink(missing_ok=True)
            return
        if tries >= TRIES_PER_IMAGE:
            records[rels[0]] = {"status": "failed", "reason": f"the labelling process died on it {tries} times"}
            journal.unlink(missing_ok=True)
            return
        journal.write_text(str(tries + 1))
        began = time.perf_counter()
        results = list(run_batch_or_singles(self.job.labeler, chunk))
        share = (time.perf_counter() - began) / len(chunk)
        for (image, item), (_, outputs) in zip(chunk, results):
            began = time.perf_counter()
            records[str(image.rel)] = ({"status": "failed", "reason": outputs} if isinstance(outputs, str)
                                       else self.write(image, item, outputs))
            seconds[str(image.rel)][1:] = [share, time.perf_counter() - began]
        journal.unlink(missing_ok=True)

    def __call__(self, batch: dict) -> dict:
        job, rows = self.job, [{key: batch[key][i] for key in batch} for i in range(len(batch["rel"]))]
        job.names = {PurePosixPath(str(r["rel"])): str(r["name"]) for r in rows}
        records: dict[str, dict] = {}
        seconds = {str(r["rel"]): [float(r["decode_s"]), 0.0, 0.0] for r in rows}
        buckets: dict[tuple, list[tuple[InputImage, Prepared]]] = defaultdict(list)
        for row in rows:
            image, error = _image(row), str(row["error"])
            if row["kind"] == "overlay":
                records[str(image.rel)] = {"overlay_error": error} if error else {}
            elif error:
                records[str(image.rel)] = {"status": "failed", "reason": error}
            elif (done := written_this_run(job, image, self.started_ns)) is not None:
                records[str(image.rel)] = done
            else:
                rgb = row["rgb"] if row["rgb"].flags.writeable else row["rgb"].copy()  # the CRF writes into it
                decoded = DecodedImage(rgb, tuple(int(s) for s in row["size"]))
                item = job.labeler.prepare(decoded, row["tags"] if job.info.needs_tags else None)
                buckets[item.batch_key].append((image, item))
        for bucket in buckets.values():  # batched only with images of the same batch_key, as locally
            for start in range(0, len(bucket), job.options.batch_size):
                self._label(bucket[start:start + job.options.batch_size], records, seconds)
        rels = [str(r["rel"]) for r in rows]
        return {"rel": rels, "kind": [str(r["kind"]) for r in rows], "record": [json.dumps(records[r]) for r in rels],
                "engine": [self.engine] * len(rels), "seconds": [seconds[r] for r in rels]}
