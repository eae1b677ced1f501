"""``aesipe-train corrections RUN SOURCE``: bring reviewed masks back into a run (``<run>/corrections/``).

SOURCE is read by ``readers`` (index PNGs, CVAT, COCO, Label Studio); every mask is then checked against the
run's dataset before anything is written: its image must be in a training split (corrections are training
data; an image of another split, or of none, is refused), its size must be the image's, and its classes are
matched by name to the run's (the background also answers to "background" and "_background_"). Each
problem is one line; with any, nothing is imported. Then ``aesipe.corrections.CorrectionStore.apply``: the
same mask again changes nothing, a different mask of an image replaces the stored one (and says so).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from aesipe.config import RunConfig
from aesipe.corrections import CorrectionStore, ImportResult
from aesipe.data import open_dataset, resolve_split
from aesipe.imaging import image_size
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import IGNORE_INDEX

from .readers import image_key_variants, read_source
from .sources import Candidate

BACKGROUND_ALIASES = ("background", "_background_")


@dataclass(frozen=True)
class ImportReport:
    kind: str
    result: ImportResult
    store: CorrectionStore


def training_splits(cfg: RunConfig) -> list[str]:
    """The splits whose images a correction may be of: stage 1's and the segmenter's (read once each)."""
    splits = [cfg.data.train_split, cfg.seg.train_split or cfg.data.train_split]
    return list({resolve_split(cfg.data, s): s for s in splits}.values())


def _other_split_ids(cfg: RunConfig, training: set[str]) -> dict[str, str]:
    """{id: split} of the images of the run's other splits (to say why such an image is refused)."""
    found: dict[str, str] = {}
    for split in dict.fromkeys([cfg.data.eval_split, cfg.data.cam_split]):
        try:
            ds = open_dataset(cfg.data, split)
        except UserError:
            continue
        found.update({i: split for i in ds.ids if i not in training})
    return found


def class_lookup(class_names: Sequence[str]) -> Callable[[str], int | None]:
    """Name -> the run's label value: exact, then ignoring case; the background by its aliases too."""
    exact = {name: i for i, name in enumerate(class_names)}
    folded: dict[str, int] = {}
    for i, name in enumerate(class_names):
        folded.setdefault(name.casefold(), i)
    for alias in BACKGROUND_ALIASES:
        folded.setdefault(alias, 0)

    def lookup(name: str) -> int | None:
        name = name.strip()
        return exact.get(name, folded.get(name.casefold()))

    return lookup


def _to_run_labels(candidate: Candidate, lookup, num_labels: int, where: str) -> tuple[np.ndarray | None, list[str]]:
    """The candidate's mask in the run's label values, or (None, problems)."""
    codes = np.unique(candidate.labels)
    if candidate.names is None:  # index PNGs: already the run's values
        bad = [int(c) for c in codes if c >= num_labels and c != IGNORE_INDEX]
        if bad:
            return None, [f"{where}: value(s) {bad[:5]} are no class of the run (0-{num_labels - 1}, 255 = void)"]
        return candidate.labels.astype(np.uint8), []
    table = np.full(int(codes.max()) + 1, IGNORE_INDEX, np.uint8)
    problems = []
    for code in codes.tolist():
        name = candidate.names.get(code)
        value = lookup(name) if name is not None else (IGNORE_INDEX if code == IGNORE_INDEX else None)
        if value is None:
            problems.append(f"{where}: class {name!r} is not one of the run's classes" if name is not None
                            else f"{where}: value {code} has no class name")
        else:
            table[code] = value
    return (None, problems) if problems else (table[candidate.labels], [])


def _newest(first: Candidate, second: Candidate) -> Candidate | None:
    if first.time and second.time and first.time != second.time:
        return max(first, second, key=lambda c: c.time)
    return None


def gather(cfg: RunConfig, candidates: list[Candidate], problems: list[str], source: Path):
    """Check every candidate against the run's dataset: ({image id: mask}, {image id: item}, problems)."""
    datasets = [open_dataset(cfg.data, split) for split in training_splits(cfg)]
    class_names = datasets[0].class_names
    paths = {i: ds.image_path(i) for ds in datasets for i in ds.ids}
    others = None
    lookup = class_lookup(class_names)
    chosen: dict[str, Candidate] = {}
    for candidate in candidates:
        where = f"{source.name}: {candidate.item}"
        image_id = next((v for v in image_key_variants(candidate.key) if v in paths), None)
        if image_id is None:
            others = _other_split_ids(cfg, set(paths)) if others is None else others
            elsewhere = next((v for v in image_key_variants(candidate.key) if v in others), None)
            problems.append(f"{where}: image {elsewhere!r} is in split {others[elsewhere]!r}, not a training split "
                            f"({', '.join(training_splits(cfg))})" if elsewhere is not None
                            else f"{where}: image {candidate.key!r} is not in the dataset")
            continue
        if image_id in chosen:
            newer = _newest(chosen[image_id], candidate)
            if newer is None:
                problems.append(f"{where}: image {image_id!r} is also in {chosen[image_id].item}")
            else:
                chosen[image_id] = newer
            continue
        chosen[image_id] = candidate
    masks, items = {}, {}
    for image_id, candidate in chosen.items():
        where = f"{source.name}: {candidate.item}"
        height, width = image_size(paths[image_id])
        if candidate.labels is None:
            candidate.labels, candidate.names = np.zeros((height, width), np.uint8), None
        if candidate.labels.shape != (height, width):
            shape = candidate.labels.shape
            problems.append(f"{where}: mask is {shape[1]}x{shape[0]} but image {image_id!r} is {width}x{height} (WxH)")
            continue
        labels, found = _to_run_labels(candidate, lookup, len(class_names), where)
        problems += found
        if labels is not None:
            masks[image_id], items[image_id] = labels, candidate.item
    return masks, items, problems


def import_corrections(cfg: RunConfig, source: str | Path, echo: Callable[[str], None] = print) -> ImportReport:
    """Import the reviewed masks of ``source`` into ``<run>/corrections/`` (module docstring); all or nothing."""
    source = Path(source)
    kind, (candidates, problems) = read_source(source)
    masks, items, problems = gather(cfg, candidates, problems, source)
    if problems:
        for line in problems:
            echo(line)
        raise UserError(f"{len(problems)} problem(s) in {source}; nothing imported")
    if not masks:
        raise UserError(f"{source} holds no reviewed mask ({kind} source)")
    store = CorrectionStore.of_run(cfg.run_dir)
    ds = open_dataset(cfg.data, training_splits(cfg)[0])
    result = store.apply(masks, {"source": source.resolve(), "kind": kind, "items": items}, ds.class_names, ds.palette)
    for image_id, old in sorted(result.replaced.items()):
        echo(f"{image_id}: replaces the correction imported {old.get('imported', '?')} from {old.get('source', '?')}")
    return ImportReport(kind, result, store)


def describe(report: ImportReport, source: Path) -> str:
    r = report.result
    if not r.changed:
        return f"nothing new in {source} ({len(r.unchanged)} mask(s) already imported); {len(report.store)} corrected image(s)"
    return (f"imported {len(r.added)} new and {len(r.replaced)} replaced correction(s) from {source} ({report.kind}), "
            f"{len(r.unchanged)} unchanged; the run has {len(report.store)} corrected image(s)")
