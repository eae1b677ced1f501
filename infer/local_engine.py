"""The local engine: the per-image pipeline (``steps.py``) on threads of this machine, the steps overlapping.

Decoding and preparing run in a thread pool (Pillow, OpenCV and numpy release the GIL) and are taken in the
order they finish, so one slow or huge image never holds back the ones already decoded. The main thread
groups prepared images by batch key (same padded shapes; for a pseudo-labeller the same tags) into batches (a
key's batch goes as soon as it is full; when too many images wait, the fullest key goes early) and hands them
to the model threads (ONNX Runtime releases the GIL too): ``streams`` batches run at once, each on its own ONNX
Runtime session on a CPU (``session.py``); finishing, PNG encoding and atomic writes run in a third pool. The
output of an image never depends on which images share its batch.
"""
from __future__ import annotations

import collections
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tqdm import tqdm

from .items import Prepared
from .job import LabelJob, Plan
from .labeler import Labeler
from .layout import ImageTask
from .report import Report
from .settings import LabelSettings
from .steps import Decoded, MaskWriter, decode, is_machine_fault, run_batch_or_singles

REPORT_EVERY_S = 10.0


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def check_available() -> None:
    """Nothing to check: threads are always there."""


def open_labeler(model_path: Path, settings: LabelSettings) -> Labeler:
    return Labeler(model_path, settings, parallel_calls=True)


def warnings(job: LabelJob, labeler: Labeler) -> list[str]:
    out = [labeler.fallback] if labeler.fallback else []
    asked = job.settings.streams
    if asked is not None and asked != labeler.streams:
        where = "a GPU" if labeler.model.on_gpu else "a TorchScript file"
        out.append(f"--streams {asked}: {where} runs one model call at a time")
    return out


def _completed(pool: ThreadPoolExecutor, fn, items: Iterable[ImageTask], window: int) -> Iterator[tuple[ImageTask, object]]:
    """(item, fn(item)) in the order they finish, at most ``window`` in flight (bounded memory)."""
    pending: dict[Future, ImageTask] = {}
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


def run(job: LabelJob, labeler: Labeler, plan: Plan, report: Report, stats, progress: bool,
        log: Callable[[str], None]) -> None:
    """Label ``plan.todo`` (and write the missing companions of kept masks), recording into ``report``."""
    log(plan.describe())
    settings, writer = job.settings, MaskWriter(job)
    workers, streams = settings.workers or default_workers(), labeler.streams
    window = settings.batch_size * (workers + 2 + streams)
    bar = tqdm(total=len(plan.todo), unit="img", disable=not progress, dynamic_ncols=True, desc="labelling")
    last_flush = [time.perf_counter()]
    readers = ThreadPoolExecutor(workers, thread_name_prefix="decode")
    writers = ThreadPoolExecutor(workers, thread_name_prefix="write")
    models = ThreadPoolExecutor(streams, thread_name_prefix="model")
    running: set[Future] = set()  # batches in the model, at most ``streams``
    pending: collections.deque[Future] = collections.deque()  # images being finished and written

    def record(task: ImageTask, entry: dict) -> None:
        report.set(task.rel, entry)
        stats.count()
        bar.update(1)

    def companions_of_kept(task: ImageTask) -> None:
        try:
            writer.write_missing_companions(task)
        except Exception as exc:  # the mask is fine; say why its preview is missing
            report.set(task.rel, {**report.images[task.rel], "overlay_error": f"{type(exc).__name__}: {exc}"})

    def prepare(task: ImageTask) -> tuple[Decoded, Prepared] | str:
        decoded = decode(task, job)
        return decoded if isinstance(decoded, str) else (decoded, labeler.prepare(decoded.image, decoded.tags))

    def finish(task: ImageTask, decoded: Decoded, item: Prepared, outputs) -> None:
        try:
            entry = stats.timed("postprocess_write", lambda: writer.write(task, labeler.finish(item, outputs),
                                                                           decoded.image.rgb, decoded.content))
        except Exception as exc:  # one bad image must not stop the folder; the reason goes in the report
            if is_machine_fault(exc):
                raise  # a full disk is no image's fault: the run stops (``folder.py`` says so in one line)
            entry = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        record(task, entry)

    def infer(batch: list[tuple[ImageTask, tuple[Decoded, Prepared]]]) -> list[Future]:
        """In a model thread: run one batch and hand its images to the writers."""
        prepared = {task.rel: pair for task, pair in batch}
        results = stats.timed("inference", lambda: list(run_batch_or_singles(labeler, [(t, p[1]) for t, p in batch])))
        written = []
        for task, outputs in results:
            if isinstance(outputs, str):
                record(task, {"status": "failed", "reason": outputs})
            else:
                written.append(writers.submit(finish, task, *prepared[task.rel], outputs))
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
            report.flush()

    def run_batch(batch) -> None:
        collect(streams - 1)  # a free stream: prepared images wait here, not in an unbounded queue
        running.add(models.submit(infer, batch))
        drain(window)

    try:
        for task in plan.companions_missing:
            pending.append(writers.submit(companions_of_kept, task))
        buckets: dict[tuple, list] = collections.defaultdict(list)
        for task, result in _completed(readers, lambda t: stats.timed("decode", prepare, t), plan.todo, window):
            if isinstance(result, str):
                record(task, {"status": "failed", "reason": result})
                continue
            key = result[1].batch_key
            bucket = buckets[key]
            bucket.append((task, result))
            if len(bucket) >= settings.batch_size:
                run_batch(buckets.pop(key))
            elif sum(len(b) for b in buckets.values()) > window:
                run_batch(buckets.pop(max(buckets, key=lambda k: len(buckets[k]))))
        for key in list(buckets):
            run_batch(buckets.pop(key))
        collect(0)
        drain(0)
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        models.shutdown(wait=True, cancel_futures=True)  # a running batch finishes and hands over its images
        writers.shutdown(wait=True, cancel_futures=False)  # finish what was started: nothing half-done
        bar.close()
