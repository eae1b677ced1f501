"""``aesipe-train review-queue RUN --n 25``: which training images a reviewer's correction helps most.

Every training image without a correction is scored on what the run itself is unsure of, from whatever
stages have run:
- ``margin``: 1 - the mean gap between the strongest and the second-strongest class map per pixel (the
  stage-1 maps of ``cams/``, background x ``cam.background_scale``): maps that hesitate everywhere;
- ``disagreement``: the fraction of pixels where the random-walk pseudo-labels (``seg_labels/``; without them
  the stage-1 labels) and the trained segmenter (``seg/final.pt``) disagree: labels the segmenter could not
  learn, or learnt past;
- ``small``: the fraction of the image's tagged classes that cover less than ``SMALL_CLASS`` of its
  pseudo-label: a tag the labels lost or nearly lost.
Each signal is turned into its rank among the images (0 = surest, 1 = least sure) and the score is the
mean rank of the signals available, so no signal's scale dominates. The queue's first ``n`` are then picked
one by one for coverage as well: an image's score is halved for every time its least-chosen tag has already
been chosen (corrections of one hard class alone would leave the others as they were). Writes ``<run>/review_queue.csv`` (every
candidate, best first) and ``<run>/review_queue/``: links to the first ``n`` images, named by image id, to
hand straight to ``aesipe-label MODEL RUN/review_queue OUT --format labelstudio`` (or ``cvat``).
"""
from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from aesipe.config import RunConfig
from aesipe.corrections import CorrectionStore
from aesipe.data import open_dataset
from aesipe.pseudo_labels import to_labels
from aesipe.utils.atomic import atomic_write_text
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import load_label_png

QUEUE_CSV = "review_queue.csv"
QUEUE_DIR = "review_queue"
SMALL_CLASS = 0.01
"""A tagged class covering less than this fraction of its image's pseudo-label counts as small or missing."""
COLUMNS = ("rank", "image", "score", "margin", "disagreement", "small", "tags", "path")


def margin_uncertainty(maps: np.ndarray, background_scale: float) -> float:
    """1 - mean over pixels of (strongest - second strongest map), background scaled; one map: 0."""
    if len(maps) < 2:
        return 0.0
    scaled = np.array(maps, np.float32)
    scaled[0] *= background_scale
    top = np.partition(scaled, len(scaled) - 2, axis=0)[-2:]
    return float(1.0 - np.clip(top[1] - top[0], 0, 1).mean())


def small_fraction(labels: np.ndarray, tags: np.ndarray) -> float:
    """Fraction of the tagged classes (label values) covering less than SMALL_CLASS of ``labels``."""
    if not len(tags):
        return 0.0
    counts = np.bincount(labels.ravel(), minlength=256)
    return float(np.mean(counts[tags] < SMALL_CLASS * labels.size))


def ranks(values: list[float | None]) -> np.ndarray:
    """Each value's rank in [0, 1] (ties share their mean rank); None stays NaN."""
    array = np.array([np.nan if v is None else v for v in values], np.float64)
    known = ~np.isnan(array)
    out = np.full(len(array), np.nan)
    if known.sum() == 1:
        out[known] = 0.5
    elif known.any():
        sorted_values = np.sort(array[known])
        low = np.searchsorted(sorted_values, array[known], "left")
        high = np.searchsorted(sorted_values, array[known], "right") - 1
        out[known] = (low + high) / 2 / (known.sum() - 1)
    return out


def _segmenter(cfg: RunConfig):
    """(predict(image) -> labels) of the run's segmenter, or None before ``seg`` ran."""
    from ..stages.seg import seg_dir

    if not (seg_dir(cfg) / "final.pt").is_file():
        return None
    from aesipe.data.transforms import to_tensor
    from aesipe.models.inference import for_inference

    from .. import engine
    from ..stages.seg import load_segmenter
    from ..stages.seg_eval import predict_probabilities

    model, _ = load_segmenter(cfg)
    device = engine.select_device(cfg.runtime.device)
    model = for_inference(model).to(device)
    return lambda image: predict_probabilities(model, to_tensor(image).to(device), (1.0,), False).argmax(0).cpu().numpy()


def score_images(cfg: RunConfig, split: str | None = None, progress: bool = True) -> list[dict]:
    """One row per uncorrected image of ``split`` (default: the segmenter's training split), best first."""
    from tqdm import tqdm

    from ..stages.evaluate import cam_dir, load_cam_file
    from ..stages.random_walk import seg_label_dir, seg_train_split

    split = split or seg_train_split(cfg)
    ds = open_dataset(cfg.data, split)
    store = CorrectionStore.of_run(cfg.run_dir)
    todo = [i for i in ds.ids if i not in store]
    cams, walked = cam_dir(cfg, split), seg_label_dir(cfg, split)
    if not any((cams / f"{i}.npz").is_file() for i in todo):
        raise UserError(f"no CAMs in {cams}: run `aesipe-train make-cam {cfg.run_dir}` (or the pipeline) first")
    predict = _segmenter(cfg)
    rows = []
    for image_id in tqdm(todo, desc="review-queue", disable=not progress, dynamic_ncols=True):
        row: dict = {"image": image_id, "path": str(ds.image_path(image_id)), "margin": None, "disagreement": None,
                     "small": None, "tags": " ".join(ds.class_names[c + 1] for c in ds.label_indices(image_id))}
        tags = np.array([c + 1 for c in ds.label_indices(image_id)], np.int64)
        labels = None
        if (cams / f"{image_id}.npz").is_file():
            classes, maps = load_cam_file(cams / f"{image_id}.npz", "maps")
            row["margin"] = margin_uncertainty(maps, cfg.cam.background_scale)
            labels = to_labels(maps, classes, cfg.cam.background_scale)
        if (walked / f"{image_id}.png").is_file():
            labels = load_label_png(walked / f"{image_id}.png")
        if labels is not None:
            row["small"] = small_fraction(labels, tags)
            if predict is not None:
                row["disagreement"] = float(np.mean(predict(ds.load_image(image_id)) != labels))
        rows.append(row)
    signals = [ranks([r[k] for r in rows]) for k in ("margin", "disagreement", "small")]
    stacked = np.stack(signals)
    available = ~np.isnan(stacked)
    scores = np.where(available, stacked, 0).sum(0) / np.maximum(available.sum(0), 1)
    for row, score in zip(rows, scores):
        row["score"] = float(score)
    return sorted(rows, key=lambda r: (-r["score"], r["image"]))


def cover_classes(rows: list[dict], n: int) -> list[dict]:
    """The first ``n`` of ``rows`` (sorted by score) re-picked greedily: score x 0.5 ** (times the image's
    least-chosen tag was chosen already); the rest follow in score order."""
    remaining = list(rows)
    chosen_count: dict[str, int] = {}
    picked = []
    while remaining and len(picked) < n:
        def worth(row: dict) -> float:
            tags = row["tags"].split() or [""]
            return row["score"] * 0.5 ** min(chosen_count.get(t, 0) for t in tags)

        best = max(range(len(remaining)), key=lambda k: (worth(remaining[k]), -k))
        row = remaining.pop(best)
        for tag in row["tags"].split() or [""]:
            chosen_count[tag] = chosen_count.get(tag, 0) + 1
        picked.append(row)
    return picked + remaining


def write_queue(cfg: RunConfig, rows: list[dict], n: int) -> tuple[Path, Path]:
    """``review_queue.csv`` (all rows, ranked) and ``review_queue/`` (links to the first ``n`` images)."""
    run = Path(cfg.run_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for rank, row in enumerate(rows, start=1):
        writer.writerow({**row, "rank": rank, **{k: "" if row[k] is None else f"{row[k]:.4f}"
                                                 for k in ("score", "margin", "disagreement", "small")}})
    atomic_write_text(run / QUEUE_CSV, buffer.getvalue())
    folder = run / QUEUE_DIR
    staging = run / f".{QUEUE_DIR}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for row in rows[:n]:
        path = Path(row["path"])
        os.symlink(path.resolve(), staging / f"{row['image']}{path.suffix.lower()}")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return run / QUEUE_CSV, folder


def review_queue(cfg: RunConfig, n: int, split: str | None = None, progress: bool = True,
                 echo: Callable[[str], None] = print) -> list[dict]:
    if n < 1:
        raise UserError(f"--n must be at least 1, not {n}")
    rows = cover_classes(score_images(cfg, split, progress), n)
    csv_path, folder = write_queue(cfg, rows, n)
    used = [k for k in ("margin", "disagreement", "small") if any(r[k] is not None for r in rows)]
    echo(f"ranked {len(rows)} uncorrected images by {', '.join(used)}; wrote {csv_path} and {folder}/ "
         f"(the first {min(n, len(rows))})")
    return rows
