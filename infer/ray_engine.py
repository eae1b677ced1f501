"""``--engine ray``: the labelling job of ``job.py`` on a Ray cluster (Ray Data), masks bit for bit the local engine's.

The driver builds the ``LabelJob`` (the checks, the plan) as ``folder.label_folder`` does and hands the images
to do to Ray Data: ``from_items`` (paths and output names) -> ``map`` tasks that read and decode them
(``LabelJob.prepare``) -> ``map_batches`` on a pool of N actors, each holding one ``Labeler`` (one ONNX Runtime
session), that build the model inputs, run them (``run_batch_or_singles``) and write the masks straight into
OUTPUT, a path every node sees, with ``LabelJob.write``: the same atomic writes, records and fingerprints as
locally. Only the per-image records travel back; the driver merges them into the one ``report.json``.

- The decode tasks hand the actors uint8 pixels (3 bytes a pixel through the object store): the float32 model
  inputs, 12 bytes a pixel per test-time variant, are built in the actor that runs them.
- Ray's CPUs: with C cores for N actors, each ONNX Runtime session gets floor(C/N) intra-op threads (``--threads``
  overrides) and reserves C/N minus a quarter core, the quarter left to a decode task (``DECODE_CPUS``), so the
  decode stage can never be starved. With ``--device cuda`` each actor reserves one GPU and one core.
- An actor that dies is restarted by Ray and its batch retried (Ray Data's default for actor pools); masks an
  earlier try finished are recognised by their fingerprint and kept, not redone. A small journal file per batch
  in OUTPUT counts the tries: a batch that killed its actor is retried image by image, and an image that kills
  it ``TRIES_PER_IMAGE`` times fails alone, with that reason, instead of being retried for ever.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
from tqdm import tqdm

from aesipe.tags import read_tags_csv
from aesipe.utils.errors import UserError

from . import fingerprint
from .api import Prepared
from .inputs import InputImage
from .io import DecodedImage
from .job import LabelJob, LabelOptions, labeler_for, run_batch_or_singles
from .report import REPORT_NAME, Report
from .session import parse_device

INSTALL_HINT = "--engine ray needs Ray: pip install 'aesipe[ray]'"
DECODE_CPUS = 0.25
DECODE_RETRIES = 3
"""Tries of a decode task whose process died (Ray Data's default retries forever: an image that crashes
its decoder every time would hang the run; after these tries the run stops with exit 1 and a re-run resumes)."""
TRIES_PER_IMAGE = 3
MAX_BLOCKS = 10_000
REPORT_EVERY_S = 10.0
_DRIVER_ONLY = ("labeler", "report", "images", "names", "tags", "log")
"""LabelJob attributes that stay on the driver (the session, the listing, the report); the rest travel."""
_NO_RGB, _NO_TAGS = np.zeros((0, 0, 3), np.uint8), np.zeros(0, np.float32)


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the extra is ray[data]
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


# -- the workers' side ------------------------------------------------------------------------------------------
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


def decode(row: dict, state: dict) -> dict:
    """Ray Data task: one image read and decoded (or a kept mask's missing overlay written)."""
    if state["token"] not in _decode_jobs:
        _decode_jobs.clear()
        _decode_jobs[state["token"]] = _worker_job(state, _DecodeOnly())
    job, image, started = _decode_jobs[state["token"]], _image(row), time.perf_counter()
    job.names = {image.rel: row["name"]}
    out = {**row, "rgb": _NO_RGB, "size": np.zeros(2, np.int64), "tags": _NO_TAGS, "error": ""}
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
        labeler = labeler_for(state["job"]["model_path"], state["job"]["options"], device=device, threads=threads)
        self.job, self.started_ns, self.token = _worker_job(state, labeler), state["started_ns"], state["token"]
        self.engine = json.dumps({"providers": labeler.providers, "fallback": labeler.fallback})

    def write(self, image: InputImage, item: Prepared, outputs) -> dict:
        try:
            return self.job.write(image, item, outputs)
        except Exception as exc:  # one bad image must not stop the folder (as locally)
            return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}

    def _label(self, chunk: list[tuple[InputImage, Prepared]], records: dict, seconds: dict) -> None:
        rels = [str(image.rel) for image, _ in chunk]
        key = hashlib.sha256("\n".join([self.token, *rels]).encode()).hexdigest()[:16]
        journal = self.job.output_dir / f".aesipe-ray-{key}.tmp"  # a killed run's are removed by the next one
        try:
            tries = int(journal.read_text() or 1)
        except FileNotFoundError:
            tries = 0
        except ValueError:  # cut off while being written: that try died too
            tries = 1
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


# -- the driver -------------------------------------------------------------------------------------------------
def _connect(ray, address: str | None) -> bool:
    """Use the process's Ray session if it has one, else start or join one; True if we must shut it down."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError, ... all mean: no cluster there
        raise UserError(f"cannot start or reach the Ray cluster{f' at {address}' if address else ''}: "
                        f"{_last_line(exc)}") from None
    return True


def actor_resources(cluster: dict, node_cpus: float, device: str, actors: int | None, threads: int | None) -> dict:
    """Actor count, the device and threads of each session, and what each actor reserves (see the docstring)."""
    kind, _ = parse_device(device)
    if actors is not None and actors < 1:
        raise UserError("--actors must be at least 1")
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    on_gpu = kind == "cuda" or (kind == "auto" and gpus >= 1)
    if on_gpu:
        count = actors or int(gpus)
        if count < 1 or gpus < count:
            raise UserError(f"--device {device} with {count} actor(s) needs one GPU each; the Ray cluster has {gpus:g}")
        per_actor = min(1.0, (cpus - DECODE_CPUS) / count)
        if per_actor < 0.1:
            raise UserError(f"--actors {count}: the Ray cluster has {cpus:g} CPUs, too few to feed {count} GPU actors")
        return {"actors": count, "device": "cuda", "threads": threads or 1,  # Ray hands each actor its own GPU
                "num_cpus": per_actor, "num_gpus": 1}
    count = actors or max(1, int(cpus // 4))
    per_actor = min(cpus / count, node_cpus)
    if per_actor - DECODE_CPUS < 0.1:
        raise UserError(f"--actors {count}: the Ray cluster has {cpus:g} CPUs, too few for {count} actors and the decode tasks")
    return {"actors": count, "device": "cpu", "threads": threads or max(1, int(per_actor)),
            "num_cpus": round(per_actor - DECODE_CPUS, 3), "num_gpus": 0}


def _filesystem_now(folder: Path) -> int:
    """OUTPUT's own clock (a shared filesystem's may differ from this node's), to tell this run's masks apart."""
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".aesipe-clock.", suffix=".tmp") as handle:
        return os.fstat(handle.fileno()).st_mtime_ns


def label_folder_ray(model_path: str | Path, input_dir: str | Path, output_dir: str | Path, opts: LabelOptions,
                     progress: bool, log: Callable[[str], None], address: str | None = None,
                     actors: int | None = None, actor_cls: type = LabelActor) -> Report:
    """``folder.label_folder(..., engine="ray")``; ``actor_cls`` lets the tests put in a failing actor."""
    ray = import_ray()
    # The driver's own session only reads the metadata: on the CPU, whatever the actors run on.
    job = LabelJob(model_path, input_dir, output_dir, replace(opts, device="cpu", threads=1, providers=None), log)
    job.options = opts
    plan = job.plan()
    rows = ([{"rel": str(i.rel), "path": os.path.abspath(i.path), "name": job.names[i.rel], "kind": "label"} for i in plan.todo]
            + [{"rel": str(i.rel), "path": os.path.abspath(i.path), "name": job.names[i.rel], "kind": "overlay"}
               for i in plan.overlays_missing])
    shutdown = _connect(ray, address) if rows else False
    try:
        res = {"actors": 0}
        if rows:
            nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
            res = actor_resources(ray.cluster_resources(), max(nodes, default=0.0), opts.device, actors, opts.threads)
            log(f"Ray: {res['actors']} actor(s) on {res['device']}, {res['threads']} ONNX Runtime thread(s) each")
        log(plan.describe())
        state = {"job": {**{k: v for k, v in vars(job).items() if k not in _DRIVER_ONLY},
                         "model_path": Path(os.path.abspath(job.model_path)), "output_dir": Path(os.path.abspath(job.output_dir))},
                 "tags_path": os.path.abspath(opts.tags_csv) if opts.tags_csv else None,
                 "token": uuid.uuid4().hex, "started_ns": _filesystem_now(job.output_dir)}
        return _run(ray, job, plan.todo, rows, state, res, actor_cls, progress, log)
    finally:
        if shutdown:
            ray.shutdown()


def _run(ray, job: LabelJob, todo: list[InputImage], rows: list[dict], state: dict, res: dict, actor_cls: type,
         progress: bool, log) -> Report:
    report, timer, engine = job.report, {"decode": 0.0, "inference": 0.0, "postprocess_write": 0.0}, {}
    processed, first = 0, None  # first: seconds to the first result (the actors' start: a process, a session each)
    bar = tqdm(total=len(todo), unit="img", disable=not progress, dynamic_ncols=True, desc="labelling")
    quiet = logging.getLogger("ray.data")
    level = quiet.level
    quiet.setLevel(max(level, logging.ERROR))  # Ray Data's lines about each dataset (and its progress bars)
    started = last_flush = time.perf_counter()
    try:
        for row in _dataset(ray, rows, state, res, actor_cls, job.options.batch_size).iter_rows() if rows else ():
            first = first if first is not None else time.perf_counter() - started
            rel, record = row["rel"], json.loads(row["record"])
            if row["kind"] == "overlay":  # a kept mask's missing companions
                if record:
                    report.set(rel, {**report.images[rel], **record})
                continue
            if not engine:
                engine.update(json.loads(row["engine"]))
                if engine["fallback"]:
                    log(f"warning: {engine['fallback']}")
            report.set(rel, record)
            processed += 1
            for stage, seconds in zip(timer, row["seconds"]):
                timer[stage] += float(seconds)
            bar.update(1)
            if time.perf_counter() - last_flush > REPORT_EVERY_S:
                last_flush = time.perf_counter()
                report.write()
    except ray.exceptions.RayError as exc:  # not one image's failure: Ray or the cluster gave up
        raise UserError(f"the Ray job stopped ({_last_line(exc)}); the masks written so far are kept and a re-run "
                        "resumes", exit_code=1) from None
    finally:  # also on Ctrl-C: the report says what was finished
        quiet.setLevel(level)
        bar.close()
        extra = {"interrupted": processed < len(todo), "engine": "ray",
                 "ray": {**{k: res[k] for k in ("actors", "threads", "num_cpus", "num_gpus") if k in res},
                         "first_result_s": None if first is None else round(first, 3)}}
        if engine:  # what the actors ran on (the driver's own session is a CPU one)
            extra.update(providers=engine["providers"], provider_fallback=engine["fallback"])
        report.summary = job.summary(processed, time.perf_counter() - started, timer, extra)
        report.write()
    gathered = job.finalize()  # the whole-folder outputs, from the written files and the merged report
    if gathered:
        log("wrote " + ", ".join(str(path) for path in gathered))
    for line in job.failure_lines():
        log(line)
    return report


def _dataset(ray, rows: list[dict], state: dict, res: dict, actor_cls: type, batch_size: int):
    per_block = max(batch_size, math.ceil(len(rows) / MAX_BLOCKS))
    ds = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / per_block))
    ds.context.enable_progress_bars = False  # the driver shows its own, in images
    ds = ds.map(decode, fn_kwargs={"state": state}, num_cpus=DECODE_CPUS, max_retries=DECODE_RETRIES)
    return ds.map_batches(actor_cls, fn_constructor_kwargs={"state": state, "device": res["device"], "threads": res["threads"]},
                          batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=res["actors"]),
                          num_cpus=res["num_cpus"], num_gpus=res["num_gpus"])


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__
