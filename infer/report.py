"""``OUTPUT/report.json``: one record per image, totals, timings; merged with a previous run's on resume.

Kept linear and small at a million images:
- records are held as compact JSON text (a few hundred bytes an image), decoded only when read;
- while a run goes, new records are appended to a journal (``OUTPUT/.aesipe-journal.jsonl``) every few
  seconds, never by rewriting the whole report; ``report.json`` is written once, at the end, one image per
  line, and the journal is then removed. A killed run's journal is replayed by the next run, so no record is
  lost even when the report was never written (the masks also carry their own records, see
  ``fingerprint.py``).
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
UNCERTAIN_BELOW = 0.5
"""A pixel is uncertain when the probability of its class is below this (docs/deploy.md, Confidence)."""
_IMAGES_LINE = '"images": {'


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

    def __init__(self, stored: dict[str, tuple[str, bool, str]]):
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
        self._stored: dict[str, tuple[str, bool, str]] = {}
        """rel -> (status, resumed, the record as compact JSON)."""
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
        for rel, record in _read_report(path):
            if rel in keep:
                report._store(rel, record)
        try:
            with open(report.journal, encoding="utf-8") as handle:
                for line in handle:
                    rel, _, record = line.rstrip("\n").partition("\t")
                    try:
                        rel, record = json.loads(rel), json.loads(record)
                    except ValueError:
                        continue  # cut off when its run was killed
                    if rel in keep and isinstance(record, dict):
                        report._store(rel, record)
        except OSError:
            pass
        return report

    def _store(self, rel: str, record: dict) -> None:
        self._stored[rel] = (str(record.get("status")), bool(record.get("resumed")), _compact(record))

    def set(self, rel: str, record: dict) -> None:
        with self._lock:
            self._store(rel, record)
            self._unjournalled.append(rel)

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
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def flush(self) -> None:
        """Append the records set since the last flush to the journal (cheap: only the new ones)."""
        with self._lock:
            rels, self._unjournalled = self._unjournalled, []
            lines = "".join(f"{json.dumps(rel)}\t{self._stored[rel][2]}\n" for rel in rels)
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
                handle.write(b"}\n}\n")
            self._unjournalled = []
        self.journal.unlink(missing_ok=True)


def _read_report(path: Path) -> Iterator[tuple[str, dict]]:
    """(image name, record) of a report file, a line at a time (a report of any earlier layout is read whole);
    nothing for a missing or broken file (a report cut off before its atomic rename never exists)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = iter(handle)
            for line in lines:
                if line.strip() == _IMAGES_LINE:
                    break
            else:
                raise ValueError("another layout")
            for line in lines:
                entry = line.strip().rstrip(",")
                if entry == "}":
                    return
                rel, record = next(iter(json.loads("{" + entry + "}").items()))
                yield rel, record
    except (OSError, UnicodeDecodeError):
        return
    except (ValueError, StopIteration):
        yield from _read_whole(path)


def _read_whole(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        images = json.loads(path.read_text(encoding="utf-8")).get("images", {})
    except (OSError, ValueError, AttributeError):
        return  # no report yet, or not one of ours: start a fresh one
    if isinstance(images, dict):
        yield from ((rel, record) for rel, record in images.items() if isinstance(record, dict))
