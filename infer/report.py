"""``OUTPUT/report.json``: one record per image, totals, timings; merged with a previous run's on resume."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aesipe.utils.atomic import atomic_write_text

UNCERTAIN_BELOW = 0.5
"""A pixel is uncertain when the probability of its class is below this (docs/deploy.md, Confidence)."""


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


@dataclass
class Report:
    path: Path
    images: dict[str, dict] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load_previous(cls, path: Path, keep: set[str]) -> "Report":
        """The records a previous run left in ``path`` for the images named in ``keep``."""
        report = cls(path)
        try:
            images = json.loads(path.read_text()).get("images", {})
            report.images = {rel: record for rel, record in images.items() if rel in keep}
        except (OSError, ValueError, AttributeError):
            pass  # no report yet, or one cut off before its atomic rename: start a fresh one
        return report

    def set(self, rel: str, record: dict) -> None:
        with self._lock:
            self.images[rel] = record

    @property
    def ok(self) -> int:
        return sum(1 for r in self.images.values() if r.get("status") == "ok")

    @property
    def failed(self) -> int:
        return sum(1 for r in self.images.values() if r.get("status") == "failed")

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def write(self) -> None:
        with self._lock:
            images = dict(sorted(self.images.items()))
            data = {"summary": {**self.summary, "images": len(images), "ok": self.ok, "failed": self.failed},
                    "images": images}
        atomic_write_text(self.path, json.dumps(data, indent=1) + "\n")
