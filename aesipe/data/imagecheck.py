"""Every image of a training set is decoded once before step 1, so a truncated, empty or undecodable file
stops the run before any training instead of when the sampler draws it (step 6, or step 60,000).

The check: ``aesipe.imaging.verify_image``, which fails exactly where the training read (``read_rgb``) would:
the memory bound from the header, then every byte of the pixel data decoded (JPEGs in draft mode at 1/8:
the same entropy-coded data, 1/64 of the inverse DCT; a header-only check would pass a truncated file).
Files run on a few threads (Pillow decodes without the GIL).

Cached per file identity: ``<run>/checked_images.json`` lists the files found readable with (size,
mtime_ns, ctime_ns); a re-run decodes only files that are new or changed since (a file rewritten in place
changes its ctime even when its size and mtime are put back). The cache is written as the check goes, so an
interrupted check keeps its progress, and it also records the decoder it was made with: another Pillow,
aesipe or memory bound re-checks everything.

A bad image stops the run (``UserError``, one line naming it and how to exclude it; every bad file listed
in ``<run>/unreadable_images.txt``) rather than being skipped: the training set is what the split says, so
two runs of one config on one dataset train on the same images; a skipped file would shrink the set without
changing the config (the pipeline's manifest could not see it), and make-cam and the evaluations of the same
split would meet the same file again. Nothing is lost: the check runs before the first step, and a re-run
after the fix re-checks only the files that changed.
"""
from __future__ import annotations

import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from PIL import __version__ as PILLOW_VERSION

from aesipe.constants import __version__
from aesipe.imaging import MAX_DECODE_BYTES, ImageReadError, verify_image
from aesipe.utils.atomic import atomic_write_text
from aesipe.utils.errors import UserError

CACHE_FILE = "checked_images.json"
BAD_LIST_FILE = "unreadable_images.txt"
CACHE_VERSION = 1
_SAVE_EVERY = 2000
"""Files checked between two writes of the cache (an interrupted check keeps its progress)."""


@dataclass(frozen=True)
class BadImage:
    image_id: str
    path: Path
    reason: str


def file_identity(path: Path) -> list[int] | None:
    """[size, mtime_ns, ctime_ns] of ``path`` (None: it cannot be stat'ed)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _decoder_key() -> str:
    return f"aesipe {__version__}, Pillow {PILLOW_VERSION}, bound {MAX_DECODE_BYTES}"


def _load_cache(path: Path) -> dict[str, list[int]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") == CACHE_VERSION and data.get("decoder") == _decoder_key():
            return {str(k): list(v) for k, v in data["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return {}


def _save_cache(path: Path, files: Mapping[str, list[int]]) -> None:
    try:
        atomic_write_text(path, json.dumps({"version": CACHE_VERSION, "decoder": _decoder_key(), "files": files}))
    except OSError:
        pass  # an unwritable run folder only costs the check next time


def _verify(path: Path) -> str | None:
    try:
        verify_image(path)
    except ImageReadError as exc:
        return str(exc)
    return None


def _in_order(pool: ThreadPoolExecutor, paths: list[Path], window: int) -> Iterator[str | None]:
    """``_verify`` of each path, in order, with at most ``window`` in flight (memory flat in the set's size)."""
    pending: deque = deque()
    for path in paths:
        pending.append(pool.submit(_verify, path))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def find_unreadable(images: Mapping[str, Path], cache_dir: Path | None, workers: int,
                    progress: Callable[[Iterable, int], Iterable] | None = None,
                    write_cache: bool = True) -> list[BadImage]:
    """The images of ``{id: path}`` that ``read_rgb`` cannot read, checking only files the cache in
    ``cache_dir`` (None: no cache) does not list with the same identity. ``progress(iterable, total)`` wraps
    the loop (a progress bar)."""
    cache_path = cache_dir / CACHE_FILE if cache_dir is not None else None
    known = _load_cache(cache_path) if cache_path is not None else {}
    bad: list[BadImage] = []
    todo: list[tuple[str, Path, list[int]]] = []
    for image_id, path in images.items():
        identity = file_identity(path)
        if identity is None:
            bad.append(BadImage(image_id, path, "file not found"))
        elif known.get(str(path)) != identity:
            todo.append((image_id, path, identity))
    if not todo:
        return bad
    checked = 0
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="image-check") as pool:
        results = _in_order(pool, [path for _, path, _ in todo], 4 * max(1, workers))
        try:
            for (image_id, path, identity), reason in zip(todo, progress(results, len(todo)) if progress else results):
                if reason is None:
                    known[str(path)] = identity
                else:
                    bad.append(BadImage(image_id, path, reason))
                checked += 1
                if write_cache and cache_path is not None and checked % _SAVE_EVERY == 0:
                    _save_cache(cache_path, known)
        finally:
            if write_cache and cache_path is not None and checked:
                _save_cache(cache_path, known)
    return bad


def check_training_images(ds, run_dir: Path, log: Callable[[str], None] = print, write: bool = True) -> None:
    """Stop with one ``UserError`` line if an image of ``ds`` (a ``SegmentationDataset``) cannot be read; see
    the module docstring. ``write``: this process keeps the cache and the list (DDP: the main rank only)."""
    from tqdm import tqdm

    try:
        workers = min(4, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        workers = min(4, os.cpu_count() or 1)
    images = {image_id: ds.image_path(image_id) for image_id in ds.ids}

    def bar(results: Iterable, total: int) -> Iterable:
        if total >= 200:
            log(f"checking {total} of {len(images)} training images (once; later runs check only changed files)")
        return tqdm(results, total=total, desc="checking images", unit="img", disable=total < 200 or not write,
                    leave=False)

    bad = find_unreadable(images, Path(run_dir), workers, bar, write_cache=write)
    if not bad:
        return
    bad.sort(key=lambda b: str(b.path))
    listing = Path(run_dir) / BAD_LIST_FILE
    if write:
        atomic_write_text(listing, "".join(f"{b.path}\t{b.reason}\n" for b in bad))
    named = "; ".join(f"{b.path} ({b.reason})" for b in bad[:3])
    more = f" and {len(bad) - 3} more (all in {listing})" if len(bad) > 3 else ""
    source = f"remove their ids from {ds.ids_source}" if ds.ids_source else "move them out of the dataset folder"
    raise UserError(f"{len(bad)} of {len(images)} images of split {ds.split!r} cannot be read, found before "
                    f"training: {named}{more}; replace the files or {source}")
