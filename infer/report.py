"""``OUTPUT/report.json``: one record per image, totals, timings; merged with a previous run's on resume.

Kept linear and small at a million images:
- records are held as compact JSON text (a few hundred bytes an image), decoded only when read;
- while a run goes, new records are appended to a journal (``OUTPUT/.aesipe-journal.jsonl``) every few
  seconds, never by rewriting the whole report; ``report.json`` is written once, at the end, one image per
  line, and the journal is then removed. A killed run's journal is replayed by the next run, so no record is
  lost even when the report was never written (the masks also carry their own records, see
  ``fingerprint.py``).

Beside the records (``images``, the same whichever engine or folder made them), ``mask_files`` holds the size
and mtime of each mask file as written: while a mask file is unchanged, its record stands for what the mask
itself records, so a re-run need not read it (``job.recorded_made_with``).
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from aesipe.utils.atomic import atomic_open

JOURNAL_FILE = ".aesipe-journal.jsonl"
MASK_FILE = "mask_file"
"""The key under which the write step hands the report its mask file's status (see ``Report.set``)."""
ZERO_MAPS = "zero_map_fallback"
"""Record key: the tagged classes whose map was zero everywhere in this image (their pre-ReLU CAM stood in)."""
UNCERTAIN_BELOW = 0.5
"""A pixel is uncertain when the probability of its class is below this (docs/deploy.md, Confidence)."""
_IMAGES_LINE, _MASK_FILES_LINE = '"images": {', '"mask_files": {'


def mask_record(labels: np.ndarray, classes: tuple[str, ...], mask_rel: str) -> dict:
    """Status-ok record: size and the classes present with their pixel fractions."""
    counts = np.bincount(labels.ravel(), minlength=len(classes))
    total = max(1, labels.size)
    present = {(classes[i] if i < len(classes) else str(i)): round(float(c) / total, 6)
               for i, c in enumerate(counts) if c}
    return {"status": "ok", "size": [int(labels.shape[0]), int(labels.shape[1])], "classes": present,
            "mask": mask_rel}


def confidence_record(confidence: np.ndarray, confidence_rel: str) -> dict:
    """The confidence part of an image's record, from its uint8 map as written (0-255 = 0-1), so a re-run
    that reads the map back reports the same numbers."""
    values = np.asarray(confidence)
    uncertain = np.count_nonzero(values < UNCERTAIN_BELOW * 255) / max(1, values.size)
    return {"confidence": confidence_rel, "mean_confidence": round(float(values.mean(dtype=np.float64)) / 255, 4),
            "uncertain_fraction": round(float(uncertain), 6)}


def _compact(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"))


class Records(Mapping):
    """The records by image name, as read-only dicts (decoded on access)."""

    def __init__(self, stored: dict[str, tuple[str, bool, str, list | None]]):
        self._stored = stored

    def __getitem__(self, rel: str) -> dict:
        return json.loads(self._stored[rel][2])

    def __iter__(self) -> Iterator[str]:
        return iter(self._stored)

    def __len__(self) -> int:
        return len(self._stored)


class Report:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.summary: dict = {}
        self._stored: dict[str, tuple[str, bool, str, list | None]] = {}
        """rel -> (status, resumed, the record as compact JSON, the mask file's [size, mtime_ns] or None)."""
        self._unjournalled: list[str] = []
        self._lock = threading.Lock()

    @property
    def journal(self) -> Path:
        return self.path.with_name(JOURNAL_FILE)

    @property
    def images(self) -> Records:
        return Records(self._stored)

    @classmethod
    def load_previous(cls, path: Path, keep: set[str]) -> "Report":
        """The records a previous run left in ``path`` and its journal for the images named in ``keep``."""
        report = cls(path)
        records, mask_files = _read_report(path)
        for rel, record, text in records:
            if rel in keep:
                report._store(rel, record, mask_files.get(rel), text)
        try:
            with open(report.journal, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        rel, record, mask_file = (json.loads(part) for part in line.rstrip("\n").split("\t"))
                    except ValueError:
                        continue  # cut off when its run was killed
                    if rel in keep and isinstance(record, dict):
                        report._store(rel, record, mask_file)
        except OSError:
            pass
        return report

    def _store(self, rel: str, record: dict, mask_file: list | None, text: str | None = None) -> None:
        """``text``: the record as compact JSON, when it is at hand (a loaded report's line) already."""
        self._stored[rel] = (str(record.get("status")), bool(record.get("resumed")), text or _compact(record), mask_file)

    def set(self, rel: str, record: dict) -> None:
        """``record[MASK_FILE]``, if there: the [size, mtime_ns] of the mask file the record describes, as
        written; kept beside the record (``mask_files``), not in it."""
        record = dict(record)
        mask_file = record.pop(MASK_FILE, None)
        with self._lock:
            self._store(rel, record, mask_file)
            self._unjournalled.append(rel)

    def mask_file(self, rel: str) -> list | None:
        stored = self._stored.get(rel)
        return stored[3] if stored else None

    def statuses(self) -> Iterator[tuple[str, str]]:
        """(image name, status) of every record, without decoding them."""
        return ((rel, stored[0]) for rel, stored in list(self._stored.items()))

    @property
    def ok(self) -> int:
        return sum(1 for stored in list(self._stored.values()) if stored[0] == "ok")

    @property
    def failed(self) -> int:
        return sum(1 for stored in list(self._stored.values()) if stored[0] == "failed")

    @property
    def resumed(self) -> int:
        return sum(1 for stored in list(self._stored.values()) if stored[1])

    @property
    def zero_map_images(self) -> int:
        """Images whose record names tagged classes with an all-zero map (``ZERO_MAPS``), without decoding them."""
        marker = f'"{ZERO_MAPS}":'
        return sum(1 for stored in list(self._stored.values()) if marker in stored[2])

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def flush(self) -> None:
        """Append the records set since the last flush to the journal (cheap: only the new ones)."""
        with self._lock:
            rels, self._unjournalled = self._unjournalled, []
            lines = "".join(f"{json.dumps(rel)}\t{self._stored[rel][2]}\t{json.dumps(self._stored[rel][3])}\n"
                            for rel in rels)
        if lines:
            with open(self.journal, "a", encoding="utf-8") as handle:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())

    def write(self) -> None:
        """``report.json``, written once (atomically), one image per line; the journal is no longer needed."""
        with self._lock:
            rels = sorted(self._stored)
            summary = {**self.summary, "images": len(rels), "ok": self.ok, "failed": self.failed}
            with atomic_open(self.path) as handle:
                handle.write(f'{{\n"summary": {json.dumps(summary)},\n{_IMAGES_LINE}\n'.encode())
                for i, rel in enumerate(rels):
                    end = ",\n" if i + 1 < len(rels) else "\n"
                    handle.write(f"{json.dumps(rel)}: {self._stored[rel][2]}{end}".encode())
                handle.write(f"}},\n{_MASK_FILES_LINE}\n".encode())
                files = [rel for rel in rels if self._stored[rel][3] is not None]
                for i, rel in enumerate(files):
                    end = ",\n" if i + 1 < len(files) else "\n"
                    handle.write(f"{json.dumps(rel)}: {json.dumps(self._stored[rel][3])}{end}".encode())
                handle.write(b"}\n}\n")
            self._unjournalled = []
        self.journal.unlink(missing_ok=True)


_DECODER = json.JSONDecoder()


def _read_report(path: Path) -> tuple[list[tuple[str, dict, str | None]], dict[str, list]]:
    """(image name, record) pairs and the mask files' status of a report file, read a line at a time (a report
    of any earlier layout is read whole); nothing for a missing or broken file (a report cut off before its
    atomic rename never exists)."""
    try:
        with open(path, encoding="utf-8") as handle:
            records: list[tuple[str, dict, str]] = []
            mask_files: dict[str, list] = {}
            current = None
            for line in handle:
                entry = line.strip()
                if entry in (_IMAGES_LINE, _MASK_FILES_LINE):
                    current = entry
                elif entry.startswith("}"):
                    current = None
                elif current is not None:
                    rel, end = _DECODER.raw_decode(entry)  # "name": value,
                    text = entry[end:].lstrip()[1:].strip().rstrip(",")
                    value = json.loads(text)
                    if current == _MASK_FILES_LINE:
                        mask_files[rel] = value
                    elif isinstance(value, dict):
                        records.append((rel, value, text))
            if not records:
                raise ValueError("another layout")
            return records, mask_files
    except (OSError, UnicodeDecodeError):
        return [], {}
    except ValueError:
        return _read_whole(path), {}


def _read_whole(path: Path) -> list[tuple[str, dict, None]]:
    try:
        images = json.loads(path.read_text(encoding="utf-8")).get("images", {})
    except (OSError, ValueError, AttributeError):
        return []  # no report yet, or not one of ours: start a fresh one
    if not isinstance(images, dict):
        return []
    return [(rel, record, None) for rel, record in images.items() if isinstance(record, dict)]
