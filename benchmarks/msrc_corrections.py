"""What each reviewed mask is worth: MSRC-21 with 0, 10, 25 and 50 corrected training images.

The reviewer is simulated with the train split's own masks. Images are chosen by the review queue (ranked on
the 0-correction run) and, for comparison, at random (``--draws`` draws, nested: the first 10 of a draw are
in its 25). Every row reuses the 0-correction run's stage-1 network and CAMs (stage 1 is tag-trained and does
not depend on corrections), imports its corrections (``aesipe-train corrections``, a folder of index PNGs)
and runs the pipeline (``configs/msrc_pipeline.toml``): the manifest skips the stages that do not depend on
corrections. Reported per row: the segmenter's val mIoU, the random-walk pseudo-labels' mIoU on the train
images *not* corrected (the model improved, not only the corrected images), and the row's wall time against
the 0-correction run's whole pipeline.

    python benchmarks/msrc_corrections.py --data ../shared/data/msrc21-voc \
        --weights ../shared/weights/mobilenet_v2_imagenet.pth --out runs/msrc_corrections

Resumable: each finished row is kept in OUT/results/<row>.json, an interrupted row resumes where its pipeline
stopped. ``--rows q25,r25-1`` runs only those rows (q = queue, rD = random draw D; 0 = no corrections);
``--jobs 2`` runs two rows at once (each in its own process: on a crowded machine two one-thread processes
get more done than one two-thread process). Once stage 1 and its maps exist, ``--worker --rows r25-1,...``
runs random rows beside a 0-correction run still in progress.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "msrc_pipeline.toml"
SHARED_STAGES = ("train", "make-cam", "eval-cam")  # stage 1 and its maps: the same for every row


def _load(path: Path, default):
    return json.loads(path.read_text()) if path.is_file() else default


def _save(path: Path, value) -> None:
    from aesipe.utils.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(value, indent=1) + "\n")


def _config(run: Path, args, save: bool = True):
    from aesipe.train.runconfig import resolve_run_config

    overrides = [f"data.root={args.data}", f"model.pretrained={args.weights}", *args.set]
    return resolve_run_config(run, RECIPE, overrides, save=save)


def _seconds(record: dict) -> float:
    parse = lambda text: datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z")  # noqa: E731
    return (parse(record["finished"]) - parse(record["started"])).total_seconds()


def _clone_shared(base: Path, run: Path) -> None:
    """A new row: the base run's stage 1, CAMs and their manifest records (hard links: nothing is copied)."""
    run.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((base / "manifest.json").read_text())
    kept = {name: manifest["stages"][name] for name in SHARED_STAGES}
    for name in SHARED_STAGES:
        for relative in kept[name]["outputs"]:
            source, target = base / relative, run / relative
            if source.is_dir():
                shutil.copytree(source, target, copy_function=os.link, dirs_exist_ok=True)
            elif source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    os.link(source, target)
    shutil.copy(base / "config.toml", run / "config.toml")
    _save(run / "manifest.json", {**manifest, "stages": kept})


def _write_reviewer_masks(cfg, ids: list[str], folder: Path) -> None:
    """The simulated reviewer: the dataset's own masks of ``ids`` as index PNGs named by image id."""
    from aesipe.data import open_dataset
    from aesipe.utils.labelpng import save_label_png

    ds = open_dataset(cfg.data, cfg.data.train_split)
    shutil.rmtree(folder, ignore_errors=True)
    for image_id in ids:
        save_label_png(folder / f"{image_id}.png", ds.load_mask(image_id), ds.palette)


def _uncorrected_label_miou(cfg, corrected: set[str]) -> float:
    from aesipe.data import open_dataset
    from aesipe.train.metrics import ConfusionMatrix
    from aesipe.train.stages.random_walk import seg_label_dir
    from aesipe.utils.labelpng import load_label_png

    ds = open_dataset(cfg.data, cfg.data.train_split)
    matrix = ConfusionMatrix(ds.class_names)
    folder = seg_label_dir(cfg, cfg.data.train_split)
    for image_id in ds.ids:
        if image_id not in corrected:
            labels = load_label_png(folder / f"{image_id}.png")
            matrix.update(ds.load_mask(image_id), np.where(labels == 255, 0, labels))
    return float(matrix.summary()["miou"])


def _run_row(name: str, ids: list[str], args, out: Path, log) -> dict:
    from aesipe.train.corrections import describe, import_corrections
    from aesipe.train.pipeline import run_pipeline

    base = out / "base"
    run = base if not ids else out / "rows" / name
    if ids and not (run / "manifest.json").is_file():
        _clone_shared(base, run)
    cfg = _config(run, args)
    if ids:
        folder = out / "reviewer" / name
        _write_reviewer_masks(cfg, ids, folder)
        log(f"[{name}] " + describe(import_corrections(cfg, folder, echo=log), folder))
    started = time.time()
    ran: list[str] = []
    manifest = run_pipeline(cfg, echo=lambda line: (ran.append(line.split("]")[0][1:]) if line.endswith("running") else None,
                                                    log(f"[{name}] {line}")))
    stages = manifest["stages"]
    return {
        "row": name, "corrected": len(ids), "ids": ids,
        "seg_val_miou": stages["eval-seg"]["metrics"]["miou"],
        "labels_train_miou_all": stages["eval-seg-labels"]["metrics"]["miou"],
        "labels_train_miou_uncorrected": _uncorrected_label_miou(cfg, set(ids)),
        "stages_run": ran, "wall_s": round(time.time() - started, 1),
        "stage_s": {n: _seconds(r) for n, r in stages.items() if r.get("finished") and n not in SHARED_STAGES},
        "load_after": os.getloadavg(),
    }


def _orders(args, out: Path, log, queue: bool) -> dict:
    """The random draws (seeded) and, with ``queue``, the queue's ranking of the 0-correction run (which needs
    that run finished); fixed once written."""
    from aesipe.data import open_dataset

    path = out / "orders.json"
    orders = _load(path, {})
    if not all(f"r{d}" in orders for d in range(1, args.draws + 1)):
        cfg = _config(out / "base", args, save=False)
        ids = sorted(open_dataset(cfg.data, cfg.data.train_split).ids)
        orders.update({f"r{d}": [ids[i] for i in np.random.default_rng(1000 + d).permutation(len(ids))]
                       for d in range(1, args.draws + 1)})
        _save(path, {**_load(path, {}), **orders})
    if queue and "q" not in orders:
        from aesipe.train.corrections.queue import review_queue

        rows = review_queue(_config(out / "base", args), max(args.counts), echo=log)
        orders["q"] = [r["image"] for r in rows]
        _save(path, {**_load(path, {}), **orders})
    return orders


def _table(results: dict, base_wall: float | None) -> str:
    lines = ["| row | corrected | segmenter val mIoU | vs 0 | pseudo-labels, train not corrected | all train | "
             "wall (min) | its stages vs whole pipeline | stages re-run |", "|---|---|---|---|---|---|---|---|---|"]
    zero = results.get("0", {}).get("seg_val_miou")
    order = sorted(results.values(), key=lambda r: (r["corrected"], r["row"]))
    for r in order:
        delta = "" if zero is None else f"{100 * (r['seg_val_miou'] - zero):+.1f}"
        stages = sum(r["stage_s"].values())  # the stages the row ran, as the base's whole pipeline is counted
        ratio = "" if not base_wall else f"{stages / base_wall:.2f}"
        lines.append(f"| {r['row']} | {r['corrected']} | {100 * r['seg_val_miou']:.1f} | {delta} | "
                     f"{100 * r['labels_train_miou_uncorrected']:.1f} | {100 * r['labels_train_miou_all']:.1f} | "
                     f"{r['wall_s'] / 60:.1f} | {ratio} | {', '.join(r['stages_run'])} |")
    return "\n".join(lines)


def _plan(args) -> list[tuple[str, int, str]]:
    """(row, corrected images, order) with the most telling first, so a table cut short still answers the
    targets: the queue and one random draw at 25 and 10, then the other draws, 50 last."""
    small = [c for c in sorted(args.counts, key=lambda c: (c != 25, c)) if c <= 25]
    plan = [("0", 0, "q")]
    for draw in range(0, args.draws + 1):
        for count in small:
            plan.append((f"q{count}", count, "q") if draw == 0 else (f"r{count}-{draw}", count, f"r{draw}"))
    for count in (c for c in args.counts if c > 25):
        plan += [(f"q{count}", count, "q")] + [(f"r{count}-{d}", count, f"r{d}") for d in range(1, args.draws + 1)]
    wanted = set(args.rows.split(",")) if args.rows else None
    return [row for row in plan if wanted is None or row[0] in wanted]


def _claim(out: Path, name: str) -> bool:
    """Take a row for this process (rows run in several worker processes at once); a claim names its process,
    and the claim of a process that is gone is taken over."""
    path = out / "results" / f"{name}.claim"
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(path.read_text() or 0), 0)
                return False  # a live process has it
            except (ProcessLookupError, ValueError, FileNotFoundError):
                path.unlink(missing_ok=True)
                continue
        os.write(handle, str(os.getpid()).encode())
        os.close(handle)
        return True
    return False


def _work(args, out: Path, log) -> None:
    """Run every planned row that no other worker has taken; each row's result is its own file. Rows of the
    queue wait for the 0-correction run (random rows need only its stage 1 and maps)."""
    base_done = (out / "results" / "0.json").is_file()
    orders = _orders(args, out, log, queue=base_done)
    for name, count, order in _plan(args):
        if name == "0" or (out / "results" / f"{name}.json").is_file() or order not in orders or not _claim(out, name):
            continue
        result = _run_row(name, orders[order][:count], args, out, log)
        _save(out / "results" / f"{name}.json", result)
        (out / "results" / f"{name}.claim").unlink()
        log(f"[{name}] seg val mIoU {100 * result['seg_val_miou']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--weights", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--counts", default="10,25,50", help="corrected images per row (besides 0)")
    parser.add_argument("--draws", type=int, default=3, help="random draws per count")
    parser.add_argument("--rows", default=None, help="only these rows, e.g. 0,q25,r25-1 (default: all, most telling first)")
    parser.add_argument("--jobs", type=int, default=1, help="rows run at once, each in its own process (after row 0)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], help="extra config override for every row")
    args = parser.parse_args()
    args.counts = [int(c) for c in args.counts.split(",")]
    args.data, args.weights = args.data.resolve(), args.weights.resolve()
    out = args.out.resolve()
    (out / "results").mkdir(parents=True, exist_ok=True)
    log_file = open(out / "log.txt", "a")

    def log(line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {line}", flush=True)
        log_file.write(f"{stamp} {line}\n")
        log_file.flush()

    if args.worker:
        return _work(args, out, log)
    log(f"load before: {os.getloadavg()}")
    if not (out / "results" / "0.json").is_file():
        _save(out / "results" / "0.json", _run_row("0", [], args, out, log))
    _orders(args, out, log, queue=True)
    if args.jobs > 1:
        workers = [subprocess.Popen([sys.executable, *sys.argv, "--worker"]) for _ in range(args.jobs)]
        if any(worker.wait() for worker in workers):
            log("a worker failed: see above; a re-run resumes")
    else:
        _work(args, out, log)
    results = {p.stem: json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))}
    base_manifest = json.loads((out / "base" / "manifest.json").read_text())["stages"]
    base_wall = sum(_seconds(r) for r in base_manifest.values() if r.get("finished"))
    print(f"\nwhole pipeline of the 0-correction run: {base_wall / 60:.1f} min (stage by stage, from its manifest)")
    print(_table(results, base_wall))
    log(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    sys.exit(main())
