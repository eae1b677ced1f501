"""``label_folder`` (the engine of ``aesipe-label``): read -> batch -> run -> write, the stages overlapping.

Decoding and pre-processing run in a thread pool (Pillow, OpenCV and numpy release the GIL) and are taken
in the order they finish, so one slow or huge image never holds back the ones already decoded. The main
thread groups prepared images by padded shape into batches (a shape's batch goes as soon as it is full;
when too many images wait, the fullest shape goes early) and hands them to the model threads (ONNX Runtime
releases the GIL too): ``streams`` batches run at once, each on its own ONNX Runtime session on a CPU
(``session.py``); post-processing, PNG encoding and atomic writes run in a third pool. The output of an image
never depends on which images share its batch: images are only batched with others of the same padded size.
What is kept, redone and why is decided before any work (``job.LabelJob.plan``); a Ctrl-C writes the
report of what was finished.
"""
from __future__ import annotations

import collections
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tqdm import tqdm

from aesipe.utils.errors import UserError

from .inputs import InputImage
from .items import Prepared
from .job import LabelJob, default_workers, run_batch_or_singles
from .options import LabelOptions
from .report import Report

REPORT_EVERY_S = 10.0


class StageTimer:
    """Busy seconds per stage, summed over threads (so decode/write may exceed the wall time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self._lock = threading.Lock()

    def timed(self, stage: str, fn: Callable, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.seconds[stage] += time.perf_counter() - t0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def label_folder(model_path: str | Path, input_dir: str | Path, output_dir: str | Path, progress: bool = True,
                 log: Callable[[str], None] = _stderr, engine: str = "local", ray_address: str | None = None,
                 actors: int | None = None, **options) -> Report:
    """Label every image ``input_dir`` names (folder, image, glob pattern or @list) into ``output_dir``.

    ``options`` are ``LabelOptions`` fields (tags_csv, overlay, crf, batch_size, device, scales, flip,
    overwrite, workers, max_side, threads, providers, half, confidence, formats, sheet, tile, tile_overlap,
    classes). Returns the report (also written to disk).
    ``engine="ray"`` runs the same job on a Ray cluster (``ray_engine``: ``ray_address``, ``actors``)."""
    opts = LabelOptions(**{k: (tuple(v) if k in ("scales", "providers") and v is not None else v)
                           for k, v in options.items()})
    if engine == "ray":
        if opts.streams is not None:
            raise UserError("--streams is for the local engine: with --engine ray each actor runs one batch at a "
                            "time (choose how many with --actors)")
        from .ray_engine import label_folder_ray

        return label_folder_ray(model_path, input_dir, output_dir, opts, progress, log, ray_address, actors)
    if engine != "local":
        raise UserError(f"--engine must be local or ray, got {engine!r}")
    if ray_address is not None or actors is not None:
        raise UserError("--ray-address and --actors need --engine ray")
    job = LabelJob(model_path, input_dir, output_dir, opts, log)
    if job.labeler.fallback:
        log(f"warning: {job.labeler.fallback}")
    plan = job.plan()
    log(plan.describe())
    timer, started = StageTimer(), time.perf_counter()
    processed = [0]
    try:
        _run(job, plan.todo, plan.overlays_missing, timer, progress, processed)
    finally:  # also on Ctrl-C: the report says what was finished
        job.report.summary = job.summary(processed[0], time.perf_counter() - started, timer.seconds,
                                         {"interrupted": processed[0] < len(plan.todo)})
        job.report.write()
    gathered = job.finalize()  # annotations.json, review.csv, sheet.html, ...: from the files, as every engine does
    if gathered:
        log("wrote " + ", ".join(str(path) for path in gathered))
    for line in job.failure_lines():
        log(line)
    return job.report


def _completed(pool: ThreadPoolExecutor, fn, items: Iterable[InputImage], window: int) -> Iterator[tuple[InputImage, object]]:
    """(item, fn(item)) in the order they finish, at most ``window`` in flight (bounded memory)."""
    pending: dict[Future, InputImage] = {}
    items = iter(items)
    for item in items:
        pending[pool.submit(fn, item)] = item
        if len(pending) >= window:
            break
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            item = pending.pop(future)
            nxt = next(items, None)
            if nxt is not None:
                pending[pool.submit(fn, nxt)] = nxt
            yield item, future.result()


def _run(job: LabelJob, todo: list[InputImage], overlays: list[InputImage], timer: StageTimer, progress: bool,
         done: list[int]) -> None:
    """Label ``todo`` (and write ``overlays`` for kept masks), counting processed images in ``done[0]``."""
    report, opts = job.report, job.options
    workers, streams = opts.workers or default_workers(), job.labeler.streams
    window = opts.batch_size * (workers + 2 + streams)
    bar = tqdm(total=len(todo), unit="img", disable=not progress, dynamic_ncols=True, desc="labelling")
    last_flush = [time.perf_counter()]
    readers = ThreadPoolExecutor(workers, thread_name_prefix="decode")
    writers = ThreadPoolExecutor(workers, thread_name_prefix="write")
    models = ThreadPoolExecutor(streams, thread_name_prefix="model")
    running: set[Future] = set()  # batches in the model, at most ``streams``
    pending: collections.deque[Future] = collections.deque()  # images being finished and written

    count_lock = threading.Lock()

    def record(image: InputImage, entry: dict) -> None:
        report.set(str(image.rel), entry)
        with count_lock:
            done[0] += 1
        bar.update(1)

    def overlay_for_kept(image: InputImage) -> None:
        try:
            job.write_missing_overlay(image)
        except Exception as exc:  # the mask is fine; say why its preview is missing
            report.set(str(image.rel), {**report.images[str(image.rel)], "overlay_error": f"{type(exc).__name__}: {exc}"})

    def finish(image: InputImage, item: Prepared, outputs) -> None:
        try:
            entry = timer.timed("postprocess_write", job.write, image, item, outputs)
        except Exception as exc:  # one bad image must not stop the folder; the reason goes in the report
            entry = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        record(image, entry)

    def infer(batch: list[tuple[InputImage, Prepared]]) -> list[Future]:
        """In a model thread: run one batch and hand its images to the writers."""
        items = dict(batch)
        results = timer.timed("inference", lambda: list(run_batch_or_singles(job.labeler, batch)))
        written = []
        for image, outputs in results:
            if isinstance(outputs, str):
                record(image, {"status": "failed", "reason": outputs})
            else:
                written.append(writers.submit(finish, image, items[image], outputs))
        return written

    def collect(wait_for: int) -> None:
        """Wait until at most ``wait_for`` batches are in the model; their images join ``pending``."""
        while len(running) > wait_for:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                running.discard(future)
                pending.extend(future.result())  # re-raises what broke the engine itself (not an image)

    def drain(limit: int) -> None:
        while len(pending) > limit:
            pending.popleft().result()
        if time.perf_counter() - last_flush[0] > REPORT_EVERY_S:
            last_flush[0] = time.perf_counter()
            report.write()

    def run(batch: list[tuple[InputImage, Prepared]]) -> None:
        collect(streams - 1)  # a free stream: prepared images wait here, not in an unbounded queue
        running.add(models.submit(infer, batch))
        drain(window)

    try:
        for image in overlays:
            pending.append(writers.submit(overlay_for_kept, image))
        buckets: dict[tuple, list[tuple[InputImage, Prepared]]] = collections.defaultdict(list)
        for image, result in _completed(readers, lambda i: timer.timed("decode", job.prepare, i), todo, window):
            if isinstance(result, str):
                record(image, {"status": "failed", "reason": result})
                continue
            bucket = buckets[result.batch_key]
            bucket.append((image, result))
            if len(bucket) >= opts.batch_size:
                run(buckets.pop(result.batch_key))
            elif sum(len(b) for b in buckets.values()) > window:
                run(buckets.pop(max(buckets, key=lambda k: len(buckets[k]))))
        for key in list(buckets):
            run(buckets.pop(key))
        collect(0)
        drain(0)
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        models.shutdown(wait=True, cancel_futures=True)  # a running batch finishes and hands over its images
        writers.shutdown(wait=True, cancel_futures=False)  # finish what was started: nothing half-done
        bar.close()
