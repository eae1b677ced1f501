"""A run's reviewed masks (``<run>/corrections/``): what training and ``aesipe-label --reviewed`` read.

Layout::

    corrections/corrections.json         the record (below): the one source of truth
    corrections/masks/<id>.<digest>.png   palette PNG of the run's class indices (255 = void), one per image

The record holds, per image: the mask file, its digest (of the pixels, so a re-encoded identical mask is the
same correction), its size, where it came from (``source``: the file or folder imported, ``kind``: the
format, ``item``: the entry inside it) and when it was imported; plus the run's class names (index = label
value) and the list of imports. Mask files are named by their content: an import writes its new files first
and replaces the record in one atomic rename, so a killed import leaves the previous corrections intact
(unreferenced files are removed by the next import). numpy + Pillow only: the torch-free labelling side
reads it too. The importers (``aesipe.train.corrections``) decide what goes in.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .utils.atomic import atomic_write_text
from .utils.errors import UserError
from .utils.labelpng import load_label_png, save_label_png

CORRECTIONS_DIR = "corrections"
RECORD_FILE = "corrections.json"
MASK_DIR = "masks"
FORMAT = "aesipe-corrections"
VERSION = 1
_SAFE_ID = re.compile(r"^[^/\\\x00]+$")


def mask_digest(mask: np.ndarray) -> str:
    """Digest of a label map's pixels and shape (PNG encoders differ; the pixels decide)."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    return hashlib.sha256(f"{mask.shape[0]}x{mask.shape[1]}:".encode() + mask.tobytes()).hexdigest()[:16]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass(frozen=True)
class ImportResult:
    """What one import changed: image ids added, replaced (with the record they replaced), left as they were."""

    added: list[str] = field(default_factory=list)
    replaced: dict[str, dict] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced)


class CorrectionStore:
    """The corrections of one run (``CorrectionStore.of_run(run_dir)``); empty when none were imported."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._record = self._read()

    @classmethod
    def of_run(cls, run_dir: str | Path) -> "CorrectionStore":
        return cls(Path(run_dir) / CORRECTIONS_DIR)

    def _read(self) -> dict:
        path = self.folder / RECORD_FILE
        if not path.is_file():
            return {"format": FORMAT, "version": VERSION, "classes": None, "images": {}, "imports": []}
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("images"), dict):
            raise UserError(f"{path} is not an aesipe corrections record")
        if record.get("version", 0) > VERSION:
            raise UserError(f"{path} was written by a newer aesipe (version {record['version']}); upgrade aesipe")
        for image_id, entry in record["images"].items():
            name = entry.get("mask") if isinstance(entry, dict) else None
            if not (isinstance(name, str) and _SAFE_ID.match(image_id) and Path(name).name == name):
                raise UserError(f"{path}: bad entry for image {image_id!r}")
        return record

    # -- reading ---------------------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return sorted(self._record["images"])

    @property
    def classes(self) -> tuple[str, ...] | None:
        """The class names the masks' values mean (index = value), None before the first import."""
        names = self._record.get("classes")
        return tuple(names) if names else None

    @property
    def imports(self) -> list[dict]:
        return list(self._record.get("imports", []))

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._record["images"]

    def __len__(self) -> int:
        return len(self._record["images"])

    def entry(self, image_id: str) -> dict:
        return dict(self._record["images"][image_id])

    def mask_path(self, image_id: str) -> Path:
        return self.folder / MASK_DIR / self._record["images"][image_id]["mask"]

    def load_mask(self, image_id: str) -> np.ndarray:
        """uint8 H x W of the run's class indices (255 = void)."""
        path = self.mask_path(image_id)
        try:
            return load_label_png(path)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the corrected mask {path}: {exc}") from None

    def digest(self, ids: Sequence[str] | None = None) -> str | None:
        """One digest of the masks (of ``ids`` among them, default all); None when there are none: a run without
        corrections keys its stages as before."""
        wanted = self.ids if ids is None else sorted(i for i in set(ids) if i in self)
        if not wanted:
            return None
        text = json.dumps({i: self._record["images"][i]["digest"] for i in wanted}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def check_classes(self, class_names: Sequence[str]) -> None:
        """The run's classes must be the ones the masks were imported for (same names, same order)."""
        if self.classes is not None and tuple(class_names) != self.classes:
            raise UserError(f"the corrections in {self.folder} were imported for classes {list(self.classes)}, "
                            f"but the run's dataset has {list(class_names)}: re-import them")

    def masks_for(self, ds) -> dict[str, Path]:
        """{image id: mask file} for the images of dataset split ``ds`` that have a correction (classes checked)."""
        if not len(self):
            return {}
        self.check_classes(ds.class_names)
        return {i: self.mask_path(i) for i in ds.ids if i in self}

    # -- writing ---------------------------------------------------------------------------------------------
    def apply(self, masks: Mapping[str, np.ndarray], source: dict, class_names: Sequence[str],
              palette: np.ndarray) -> ImportResult:
        """Store ``masks`` ({image id: uint8 H x W of the run's indices}, all validated by the caller) from
        ``source`` ({"source", "kind", "items": {id: item}}). Identical masks stay as they are (no new record);
        a different mask for an image replaces the stored one. All or nothing."""
        self.check_classes(class_names)
        images = self._record["images"]
        result = ImportResult()
        staged: dict[str, dict] = {}
        for image_id in sorted(masks):
            if not _SAFE_ID.match(image_id):
                raise UserError(f"image id {image_id!r} cannot name a file")
            mask = np.ascontiguousarray(masks[image_id], dtype=np.uint8)
            digest = mask_digest(mask)
            old = images.get(image_id)
            if old is not None and old.get("digest") == digest:
                result.unchanged.append(image_id)
                continue
            staged[image_id] = {
                "mask": f"{image_id}.{digest}.png", "digest": digest, "size": [int(mask.shape[0]), int(mask.shape[1])],
                "source": str(source["source"]), "kind": source["kind"], "item": str(source["items"].get(image_id, "")),
                "imported": _now(),
            }
            if old is None:
                result.added.append(image_id)
            else:
                result.replaced[image_id] = dict(old)
        if not result.changed:
            return result
        for image_id, entry in staged.items():  # the new files first: the record below is what makes them count
            save_label_png(self.folder / MASK_DIR / entry["mask"], masks[image_id], palette)
        record = dict(self._record, classes=list(class_names), images={**images, **staged})
        record["imports"] = [*self._record.get("imports", []), {
            "source": str(source["source"]), "kind": source["kind"], "time": _now(),
            "added": len(result.added), "replaced": len(result.replaced), "unchanged": len(result.unchanged)}]
        atomic_write_text(self.folder / RECORD_FILE, json.dumps(record, indent=1, sort_keys=False) + "\n")
        self._record = record
        self._remove_unreferenced()
        return result

    def _remove_unreferenced(self) -> None:
        kept = {entry["mask"] for entry in self._record["images"].values()}
        for path in (self.folder / MASK_DIR).glob("*.png"):
            if path.name not in kept:
                path.unlink(missing_ok=True)
