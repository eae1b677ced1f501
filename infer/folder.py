"""``label_folder``, the engine of ``aesipe-label``: one job, whichever engine schedules it.

    open_job -> plan_job -> engine.run (the per-image pipeline of ``steps.py``) -> report -> gather_outputs

The checks, the plan, the report and the whole-job outputs are made here, once, for both engines; an engine
only schedules the pipeline's steps (``local_engine``: threads on this machine; ``ray_engine``: a Ray
cluster) and counts what it did in ``RunStats``. A Ctrl-C (or SIGTERM) still writes the report of what was
finished.
"""
from __future__ import annotations

import collections
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from aesipe.utils.errors import UserError

from . import reviewed
from .gathered import gather_outputs
from .job import LabelJob, open_job, plan_job
from .labeler import Labeler
from .layout import REPORT_FILE, OutputLock
from .report import ZERO_MAPS, Report
from .settings import LabelSettings
from .steps import is_machine_fault

FAILURES_SHOWN = 5


@dataclass
class RunStats:
    """What an engine did (thread-safe counters), for the report's summary."""

    processed: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))
    """Busy seconds per stage, summed over threads (so decode/write may exceed the wall time)."""
    extra: dict = field(default_factory=dict)
    """Engine-specific summary entries (the Ray engine's actors, what its workers ran on)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, images: int = 1) -> None:
        with self._lock:
            self.processed += images

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds

    def timed(self, stage: str, fn: Callable, *args):
        began = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.add(stage, time.perf_counter() - began)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def label_folder(model_path: str | Path, input_spec: str | Path, output_dir: str | Path,
                 settings: LabelSettings | None = None, *, progress: bool = True,
                 log: Callable[[str], None] = _stderr, **fields) -> Report:
    """Label every image ``input_spec`` names (folder, image, glob pattern or @list) into ``output_dir``.

    ``settings`` (or its fields as keywords: ``label_folder(m, "photos", "out", overlay=True)``) says how;
    its ``engine`` says who schedules the work. Returns the report (also written to OUTPUT/report.json)."""
    settings = LabelSettings.of(settings, **fields)
    if settings.engine == "ray":
        from . import ray_engine as engine
    else:
        from . import local_engine as engine
    engine.check_available()
    job, labeler, tasks = open_job(model_path, input_spec, output_dir, settings, engine.open_labeler, log)
    for warning in engine.warnings(job, labeler):
        log(f"warning: {warning}")
    try:
        with OutputLock(job.output_dir):
            return _run(job, labeler, tasks, engine, progress, log)
    except OSError as exc:
        if not is_machine_fault(exc):
            raise
        raise UserError(f"writing into {job.output_dir} failed: {exc.strerror or exc}; the masks already written "
                        "are kept and a re-run resumes once the disk is fixed", exit_code=1) from None


def _run(job: LabelJob, labeler: Labeler, tasks: list, engine, progress: bool, log: Callable[[str], None]) -> Report:
    """The job on a locked OUTPUT: clean up after a killed run, plan, label, report, gather."""
    report = Report.load_previous(job.layout.file(REPORT_FILE), {task.rel for task in tasks})
    job.layout.remove_temporaries()
    for_model, to_copy = reviewed.split_tasks(job, tasks, report)
    plan = plan_job(job, for_model, report)
    stats, started = RunStats(), time.perf_counter()
    try:
        reviewed.write_reviewed(job, to_copy, report, log)
        engine.run(job, labeler, plan, report, stats, progress, log)
    finally:  # also on Ctrl-C or a full disk: the report says what was finished, if it can be written
        report.summary = summarise(job, labeler, report, stats, time.perf_counter() - started,
                                   interrupted=stats.processed < len(plan.todo))
        _write_report(report, log)
    gathered = gather_outputs(job, tasks, report)
    if gathered:
        log("wrote " + ", ".join(str(path) for path in gathered))
    zero_maps = report.summary.get("zero_map_fallback_images")  # counted once, in the summary
    if zero_maps:
        log(f"{zero_maps} image(s) had a tagged class whose map was zero everywhere: its pre-ReLU CAM "
            f"stood in (their records say which: {ZERO_MAPS})")
    for line in failure_lines(report):
        log(line)
    return report


def _write_report(report: Report, log: Callable[[str], None]) -> None:
    try:
        report.write()
    except OSError as exc:
        if not is_machine_fault(exc):
            raise
        log(f"{report.path} could not be written ({exc.strerror}); every mask records what made it, so a re-run "
            "resumes without it")
        raise


def summarise(job: LabelJob, labeler: Labeler, report: Report, stats: RunStats, seconds: float,
              interrupted: bool) -> dict:
    """The report's summary: the model, the settings (whole, and what they came to), what this run did."""
    return {
        "model": str(job.model_path), "model_sha256_16": job.model_id, "model_kind": job.info.model_kind,
        "providers": labeler.providers, "provider_fallback": labeler.fallback,
        "processed_this_run": stats.processed, "resumed": report.resumed,
        "seconds": round(seconds, 3),
        "images_per_second": round(stats.processed / seconds, 3) if seconds > 0 and stats.processed else None,
        "stage_busy_seconds": {k: round(v, 3) for k, v in stats.seconds.items()},
        "settings": job.settings.as_record(),
        "options": {**job.settings.mask_record(), "streams": labeler.streams, "threads_per_stream": labeler.model.threads},
        "interrupted": interrupted,
        "zero_map_fallback_images": report.zero_map_images,
        **stats.extra,
    }


def failure_lines(report: Report) -> list[str]:
    """The first few failures with their reasons, then a count (for the console)."""
    failed = sorted(rel for rel, status in report.statuses() if status == "failed")
    lines = [f"failed: {rel}: {report.images[rel].get('reason', '')}" for rel in failed[:FAILURES_SHOWN]]
    if len(failed) > FAILURES_SHOWN:
        lines.append(f"... and {len(failed) - FAILURES_SHOWN} more failures (see {report.path})")
    return lines
