"""``label_folder`` (the engine of ``aesipe-label``): read -> batch -> run -> write, the stages overlapping.

Decoding and pre-processing run in a thread pool (Pillow and numpy release the GIL); the main thread
groups prepared images by padded shape into batches (a shape's batch goes as soon as it is full; when
too many images wait, the fullest shape goes early) and runs the model (ONNX Runtime releases the
GIL too); post-processing, PNG encoding and atomic writes run in a second pool. The output of an
image never depends on which images share its batch: images are only batched with others of the same
padded size.
"""
from __future__ import annotations

import collections
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from aesipe.tags import read_tags_csv
from aesipe.utils.atomic import atomic_write_bytes
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import overlay as blend
from aesipe.utils.labelpng import save_label_png

from .api import Labeler, Prepared
from .io import DEFAULT_MAX_SIDE, ImageReadError, list_images, read_image
from .report import REPORT_NAME, Report, mask_record

REPORT_EVERY_S = 10.0


class StageTimer:
    """Busy seconds per stage, summed over threads (so decode/write may exceed the wall time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds


def output_names(images: Sequence[Path]) -> dict[Path, str]:
    """Relative mask path per image: ``a/b.jpg -> a/b.png``; when two images would collide
    (``b.jpg`` and ``b.png``), both keep their extension: ``b.jpg.png``, ``b.png.png``."""
    stems = collections.Counter(p.with_suffix("").as_posix().lower() for p in images)
    return {p: (p.with_suffix("").as_posix() if stems[p.with_suffix("").as_posix().lower()] == 1
                else p.as_posix()) + ".png" for p in images}


def _write_overlay(path: Path, rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray) -> None:
    import io as _io

    from PIL import Image

    from .postprocess import resize_labels_nearest

    small = resize_labels_nearest(labels, *rgb.shape[:2])  # previews use the working resolution
    buffer = _io.BytesIO()
    Image.fromarray(blend(rgb, small, palette)).save(buffer, format="JPEG", quality=90)
    atomic_write_bytes(path, buffer.getvalue())


def label_folder(model_path: str | Path, input_dir: str | Path, output_dir: str | Path, tags_csv: Path | None = None,
               overlay: bool = False, crf: bool = False, batch_size: int = 4, device: str = "auto",
               half: bool = False, scales: Sequence[float] = (1.0,), flip: bool = False, overwrite: bool = False,
               workers: int | None = None, max_side: int | None = DEFAULT_MAX_SIDE, providers=None,
               threads: int | None = None, progress: bool = True, log=print) -> Report:
    """Label every image under ``input_dir`` into ``output_dir``; returns the report (also on disk)."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if not input_dir.exists():
        raise UserError(f"input not found: {input_dir}")
    if input_dir.is_dir() and not os.access(input_dir, os.R_OK | os.X_OK):
        raise UserError(f"cannot read folder {input_dir}")
    labeler = Labeler(model_path, device=device, providers=providers, half=half, scales=scales, flip=flip,
                      crf=crf, max_side=max_side, threads=threads)
    info = labeler.info
    tags = read_tags_csv(tags_csv, info.classes[1:]) if tags_csv else None
    if info.needs_tags and tags is None:
        raise UserError("this model is a pseudo-labeller: give the images' tags with --tags CSV (image,labels)")
    if labeler.fallback:
        log(f"warning: {labeler.fallback}")
    root = input_dir if input_dir.is_dir() else input_dir.parent
    images = list_images(input_dir)
    names = output_names(images)
    report = Report.load_previous(output_dir / REPORT_NAME)
    report.images = {k: v for k, v in report.images.items() if k in {p.as_posix() for p in images}}
    todo = []
    for rel in images:
        mask_path = output_dir / "masks" / names[rel]
        if mask_path.is_file() and not overwrite:
            report.set(rel.as_posix(), report.resumed_record(rel.as_posix(), mask_path, f"masks/{names[rel]}",
                                                             info.classes))
        else:
            todo.append(rel)
    workers = workers or min(4, os.cpu_count() or 1)
    timer = StageTimer()
    started = time.perf_counter()
    last_flush = [started]

    def decode(rel: Path) -> Prepared | str:
        t0 = time.perf_counter()
        try:
            vector = None
            if info.needs_tags:
                indices = tags.lookup(rel)
                if indices is None:
                    return f"no row for this image in {tags_csv}"
                vector = np.zeros(info.num_classes, dtype=np.float32)
                vector[list(indices)] = 1.0
            return labeler.prepare(read_image(root / rel, max_side), vector)
        except ImageReadError as exc:
            return str(exc)
        finally:
            timer.add("decode", time.perf_counter() - t0)

    def finish(rel: Path, item: Prepared, outputs: list[np.ndarray]) -> None:
        t0 = time.perf_counter()
        try:
            labels = labeler.finish(item, outputs)
            mask_rel = f"masks/{names[rel]}"
            save_label_png(output_dir / mask_rel, labels, labeler.palette)
            if overlay:
                _write_overlay(output_dir / "overlays" / (names[rel][:-4] + ".jpg"), item.decoded.rgb, labels,
                               labeler.palette)
            report.set(rel.as_posix(), mask_record(labels, info.classes, mask_rel))
        except Exception as exc:  # one bad image must not stop the folder; the reason goes in the report
            report.set(rel.as_posix(), {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"})
        finally:
            timer.add("postprocess_write", time.perf_counter() - t0)

    bar = tqdm(total=len(todo), unit="img", disable=not progress, dynamic_ncols=True, desc="labelling")
    pending: collections.deque[Future] = collections.deque()
    window = batch_size * (workers + 2)
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as readers, \
            ThreadPoolExecutor(workers, thread_name_prefix="write") as writers:

        def drain(limit: int) -> None:
            while len(pending) > limit:
                pending.popleft().result()
                bar.update(1)
            if time.perf_counter() - last_flush[0] > REPORT_EVERY_S:
                last_flush[0] = time.perf_counter()
                report.write()

        def run(batch: list[tuple[Path, Prepared]]) -> None:
            t0 = time.perf_counter()
            try:
                outputs = labeler.run_batch([item for _, item in batch])
            except Exception as exc:  # noqa: BLE001 - a runtime failure must not stop the folder
                timer.add("inference", time.perf_counter() - t0)
                if len(batch) > 1:  # retry one by one: only the image that breaks the model fails
                    for single in batch:
                        run([single])
                    return
                report.set(batch[0][0].as_posix(),
                           {"status": "failed", "reason": f"inference: {type(exc).__name__}: {exc}"})
                bar.update(1)
                return
            timer.add("inference", time.perf_counter() - t0)
            for (rel, item), out in zip(batch, outputs):
                pending.append(writers.submit(finish, rel, item, out))
            drain(window)

        buckets: dict[tuple, list[tuple[Path, Prepared]]] = collections.defaultdict(list)
        for rel, result in _ordered(readers, decode, todo, window):
            if isinstance(result, str):
                report.set(rel.as_posix(), {"status": "failed", "reason": result})
                bar.update(1)
                continue
            bucket = buckets[result.shape_key]
            bucket.append((rel, result))
            if len(bucket) >= batch_size:
                run(buckets.pop(result.shape_key))
            elif sum(len(b) for b in buckets.values()) > window:
                run(buckets.pop(max(buckets, key=lambda k: len(buckets[k]))))
        for key in list(buckets):
            run(buckets.pop(key))
        drain(0)
    bar.close()
    wall = time.perf_counter() - started
    done = len(todo)
    report.summary = {
        "model": str(model_path), "model_kind": info.model_kind, "providers": labeler.providers,
        "provider_fallback": labeler.fallback, "processed_this_run": done,
        "resumed": len(images) - done, "seconds": round(wall, 3),
        "images_per_second": round(done / wall, 3) if wall > 0 and done else None,
        "stage_busy_seconds": {k: round(v, 3) for k, v in timer.seconds.items()},
        "options": {"batch_size": batch_size, "scales": list(labeler.scales), "flip": flip, "crf": crf,
                    "max_side": max_side, "workers": workers},
    }
    report.write()
    return report


def _ordered(pool: ThreadPoolExecutor, fn, items: Sequence[Path], window: int) -> Iterator[tuple[Path, object]]:
    """``pool.map`` that keeps at most ``window`` tasks in flight (bounded memory for huge folders)."""
    queue: collections.deque[tuple[Path, Future]] = collections.deque()
    for rel in items:
        queue.append((rel, pool.submit(fn, rel)))
        if len(queue) >= window:
            head, future = queue.popleft()
            yield head, future.result()
    while queue:
        head, future = queue.popleft()
        yield head, future.result()
