"""Per-image work in worker processes (CRF, IR labels, evaluation), with a progress bar."""
from __future__ import annotations

import multiprocessing
from typing import Callable, Iterator, Sequence

_WORKER_STATE: tuple[Callable, object] | None = None


def _init_worker(fn: Callable, context: object) -> None:
    global _WORKER_STATE
    _WORKER_STATE = (fn, context)


def _call_worker(item):
    fn, context = _WORKER_STATE
    return fn(context, item)


def parallel_map(
    fn: Callable[[object, object], object],
    items: Sequence,
    context: object,
    workers: int,
    desc: str,
    progress: bool = True,
) -> Iterator:
    """``fn(context, item)`` for every item, in order, in ``workers`` processes, with a progress bar.

    ``fn`` must be a module-level function; ``context`` (dataset, config...) is sent to each worker
    once, not with every item. ``workers <= 1`` runs in this process (easier to debug). Worker
    processes come from a fork server (or spawn), never a plain fork of a process that may hold
    torch threads.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress, leave=False)
    try:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                yield fn(context, item)
                bar.update()
            return
        methods = multiprocessing.get_all_start_methods()
        mp = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        chunk = max(1, min(8, len(items) // (4 * workers)))
        with mp.Pool(min(workers, len(items)), initializer=_init_worker, initargs=(fn, context)) as pool:
            for result in pool.imap(_call_worker, items, chunksize=chunk):
                yield result
                bar.update()
    finally:
        bar.close()
