"""``--engine ray``: the labelling job of ``job.py`` on a Ray cluster (Ray Data), masks bit for bit the local engine's.

``folder.label_folder`` makes the checks, the plan and the report as for the local engine; this engine only
schedules the per-image pipeline of ``steps.py`` on Ray Data: ``from_items`` (the ``ImageTask``s to do) ->
``map`` tasks that decode them (``steps.decode``) -> ``map_batches`` on a pool of N actors, each holding one
``Labeler`` (one ONNX Runtime session), that prepare, run (``run_batch_or_singles``), finish and write the
masks straight into OUTPUT, a path every node sees, with ``steps.MaskWriter``: the same atomic writes,
records and fingerprints as locally. Every worker gets the job's picklable ``LabelJob`` whole. Only the
per-image records travel back; the driver merges them into the one ``report.json``. This module is the
driver; the decode tasks and the actors are in ``ray_workers.py``.

- The decode tasks hand the actors uint8 pixels (3 bytes a pixel through the object store): the float32 model
  inputs, 12 bytes a pixel per test-time variant, are built in the actor that runs them.
- Ray's CPUs: with C cores for N actors, each ONNX Runtime session gets floor(C/N) intra-op threads (``--threads``
  overrides) and reserves C/N minus a quarter core, the quarter left to a decode task (``DECODE_CPUS``), so the
  decode stage can never be starved. With ``--device cuda`` each actor reserves one GPU and one core.
- An actor that dies is restarted by Ray and its batch retried (Ray Data's default for actor pools); masks an
  earlier try finished are recognised by their fingerprint and kept, not redone. A small journal file per batch
  in OUTPUT counts the tries: a batch that killed its actor is retried image by image, and an image that kills
  it ``TRIES_PER_IMAGE`` times fails alone, with that reason, instead of being retried for ever. Decoding is
  guarded the same way: an image whose decode task dies ``TRIES_PER_IMAGE`` times (a crashing codec, memory)
  fails alone and the run goes on.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from aesipe.utils.atomic import TEMPORARY_PREFIX
from aesipe.utils.errors import UserError

from .job import LabelJob, Plan
from .labeler import Labeler
from .report import Report
from .session import parse_device
from .settings import LabelSettings

INSTALL_HINT = "--engine ray needs Ray: pip install 'aesipe[ray]'"
DECODE_CPUS = 0.25
MAX_BLOCKS = 10_000
REPORT_EVERY_S = 10.0


def _workers() -> tuple[Callable, type]:
    """The decode task and the actor class (``ray_workers``; the tests put failing ones in here)."""
    from .ray_workers import LabelActor, decode_task

    return decode_task, LabelActor


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the extra is ray[data]
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


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
    with tempfile.NamedTemporaryFile(dir=folder, prefix=TEMPORARY_PREFIX, suffix=".tmp") as handle:
        return os.fstat(handle.fileno()).st_mtime_ns


def check_available() -> None:
    import_ray()


def open_labeler(model_path: Path, settings: LabelSettings) -> Labeler:
    """The driver's own session only reads and checks the model: on the CPU, whatever the actors run on."""
    return Labeler(model_path, settings.replace(device="cpu", threads=1, providers=None))


def warnings(job: LabelJob, labeler: Labeler) -> list[str]:
    return []  # the actors' fallbacks are reported as they start (the driver's session is a CPU one)


def run(job: LabelJob, labeler: Labeler, plan: Plan, report: Report, stats, progress: bool,
        log: Callable[[str], None]) -> None:
    """Label ``plan.todo`` on Ray (and write the missing companions of kept masks), recording into ``report``."""
    ray, settings = import_ray(), job.settings
    rows = ([{"task": json.dumps(asdict(task)), "rel": task.rel, "kind": "label"} for task in plan.todo]
            + [{"task": json.dumps(asdict(task)), "rel": task.rel, "kind": "overlay"} for task in plan.companions_missing])
    shutdown = _connect(ray, settings.ray_address) if rows else False
    try:
        res = {"actors": 0}
        if rows:
            nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
            res = actor_resources(ray.cluster_resources(), max(nodes, default=0.0), settings.device, settings.actors,
                                  settings.threads)
            log(f"Ray: {res['actors']} actor(s) on {res['device']}, {res['threads']} ONNX Runtime thread(s) each")
        log(plan.describe())
        state = {"job": job, "token": uuid.uuid4().hex, "started_ns": _filesystem_now(job.output_dir)}
        _run(ray, rows, state, res, len(plan.todo), report, stats, progress, log)
    finally:
        if shutdown:
            ray.shutdown()


def _run(ray, rows: list[dict], state: dict, res: dict, todo: int, report: Report, stats, progress: bool, log) -> None:
    engine = {}
    first, started = None, time.perf_counter()  # first: seconds to the first result (the actors' start)
    bar = tqdm(total=todo, unit="img", disable=not progress, dynamic_ncols=True, desc="labelling")
    quiet = logging.getLogger("ray.data")
    level = quiet.level
    quiet.setLevel(max(level, logging.ERROR))  # Ray Data's lines about each dataset (and its progress bars)
    last_flush = started
    try:
        for row in _dataset(ray, rows, state, res, state["job"].settings.batch_size).iter_rows() if rows else ():
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
            stats.count()
            for stage, seconds in zip(("decode", "inference", "postprocess_write"), row["seconds"]):
                stats.add(stage, float(seconds))
            bar.update(1)
            if time.perf_counter() - last_flush > REPORT_EVERY_S:
                last_flush = time.perf_counter()
                report.flush()
    except ray.exceptions.RayError as exc:  # not one image's failure: Ray or the cluster gave up
        raise UserError(f"the Ray job stopped ({_last_line(exc)}); the masks written so far are kept and a re-run "
                        "resumes", exit_code=1) from None
    finally:
        quiet.setLevel(level)
        bar.close()
        stats.extra.update(engine="ray", ray={**{k: res[k] for k in ("actors", "threads", "num_cpus", "num_gpus") if k in res},
                                              "first_result_s": None if first is None else round(first, 3)})
        if engine:  # what the actors ran on (the driver's own session is a CPU one)
            stats.extra.update(providers=engine["providers"], provider_fallback=engine["fallback"])


def _dataset(ray, rows: list[dict], state: dict, res: dict, batch_size: int):
    decode_fn, actor_cls = _workers()
    per_block = max(batch_size, math.ceil(len(rows) / MAX_BLOCKS))
    ds = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / per_block))
    ds.context.enable_progress_bars = False  # the driver shows its own, in images
    # Ray retries a decode task whose process died (for ever); the task's journal makes the try after the
    # TRIES_PER_IMAGE-th death fail that image alone, so no retry limit of Ray's own is needed.
    ds = ds.map(decode_fn, fn_kwargs={"state": state}, num_cpus=DECODE_CPUS)
    return ds.map_batches(actor_cls, fn_constructor_kwargs={"state": state, "device": res["device"], "threads": res["threads"]},
                          batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=res["actors"]),
                          num_cpus=res["num_cpus"], num_gpus=res["num_gpus"])


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__
