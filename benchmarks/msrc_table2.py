#!/usr/bin/env python3
"""The paper's Table 2 in miniature on MSRC-21, several seeds per row, NEW and OLD recipe, plus a steps curve.

One command runs the whole experiment and prints the tables (mean +- std over seeds) from the JSON files
that ``aesipe-train eval-cam`` writes:

    python benchmarks/msrc_table2.py DATA_ROOT MOBILENET_WEIGHTS OUT [--seeds 0,1,2] [--recipes new,old]
        [--steps-curve [85,170,340,680]] [--aesipe-train BIN] [--jobs 2] [--threads 1]

Run it from a checkout (the recipe ``configs/msrc_mobilenet.toml`` is read relative to the current folder,
``--recipe`` to change). It is idempotent: a finished training (``stage1/final.pt``), a complete set of
CAM files and every collected evaluation JSON are skipped, an interrupted training resumes from its last
checkpoint, so re-running the same command continues where it stopped. ``--tables-only`` prints the tables
from what is there.

Networks (one per Table-2 row; the switches of ``configs/table2_*.toml`` as dotted overrides):
  sipe        SIPE baseline: last-stage seeds, no AE, no IS-CAM normalisation (IS-CAM, bg x1.0)
  ae          + AE  (AE-IS-CAM, bg x1.0)
  ae_hf       + HF  (AE-IS-CAM, bg x1.0)
  ae_hf_norm  + norm (AE-IS-CAM, bg x1.0); the same network at bg x0.8 is the +bg row = AE-SIPE
The CAM row is the plain CAM (``--map-key cam``) of the SIPE network (bg x1.0) and of the AE-SIPE network
(bg x0.8). Recipes: NEW = the checkout's defaults; OLD = NEW + ``model.freeze_bn_affine=true
model.mask_ae_seeds=true model.ae_align_corners=false``. Each network is trained on the ``train`` tags only,
``make-cam`` labels ``val`` and ``eval-cam --split val`` judges the final checkpoint; nothing is selected on
val (background-scale sweeps are printed for information only).

Output layout: OUT/runs/<recipe>/<network>/s<seed>/ (run directories, kept), OUT/runs/new/ae_hf_norm_<N>steps/s0/
(steps curve), OUT/evals/<same path>/<map>_bg<scale>_<kind>.json (a copy of every cam_eval.json),
OUT/logs/<same path>/<step>.log (each command's output), OUT/timings.jsonl (wall time and load of every step).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

# ------------------------------------------------------------------------------------------ definitions
NETWORKS: dict[str, list[str]] = {
    "sipe": ["model.hierarchical_seeds=false", "model.affinity_enhancement=false",
             "model.iscam_normalisation=false", "cam.map=iscam", "cam.background_scale=1.0"],
    "ae": ["model.hierarchical_seeds=false", "model.affinity_enhancement=true", "model.ae_variant=ae",
           "model.iscam_normalisation=false", "cam.map=aeiscam", "cam.background_scale=1.0"],
    "ae_hf": ["model.hierarchical_seeds=true", "model.affinity_enhancement=true", "model.ae_variant=ae",
              "model.iscam_normalisation=false", "cam.map=aeiscam", "cam.background_scale=1.0"],
    "ae_hf_norm": ["model.hierarchical_seeds=true", "model.affinity_enhancement=true", "model.ae_variant=ae",
                   "model.iscam_normalisation=true", "cam.map=aeiscam", "cam.background_scale=0.8"],
}
RECIPES: dict[str, list[str]] = {
    "new": [],
    "old": ["model.freeze_bn_affine=true", "model.mask_ae_seeds=true", "model.ae_align_corners=false"],
    # the three switches of OLD one at a time (issue 24: which one carries the 2-3 points)
    "bn": ["model.freeze_bn_affine=true"],
    "maskae": ["model.mask_ae_seeds=true"],
    "align": ["model.ae_align_corners=false"],
}
AE_ONLY = {"model.mask_ae_seeds=true", "model.ae_align_corners=false"}
"""Switches that only act inside the AE step: a network trained without AE trains the same with or without them."""


def canonical_recipe(recipe: str, network: str) -> str:
    """The recipe whose training is the same as ``recipe``'s for ``network`` (SIPE: AE-only switches dropped)."""
    wanted = set(RECIPES[recipe]) - (AE_ONLY if network == "sipe" else set())
    return next(name for name, switches in RECIPES.items() if set(switches) == wanted)


@dataclass(frozen=True)
class Row:
    name: str
    network: str
    map_key: str
    bg: float


ROWS = [
    Row("CAM (SIPE's network)", "sipe", "cam", 1.0),
    Row("CAM (AE-SIPE's network)", "ae_hf_norm", "cam", 0.8),
    Row("SIPE (IS-CAM)", "sipe", "iscam", 1.0),
    Row("+AE (AE-IS-CAM)", "ae", "aeiscam", 1.0),
    Row("+HF", "ae_hf", "aeiscam", 1.0),
    Row("+norm", "ae_hf_norm", "aeiscam", 1.0),
    Row("+bg x0.8 = AE-SIPE", "ae_hf_norm", "aeiscam", 0.8),
]
SWEEP = ",".join(f"{0.5 + 0.05 * i:.2f}" for i in range(21))  # 0.5:1.5:0.05, what calibrate tries
MAP_NAMES = {"cam": "CAM", "iscam": "IS-CAM", "aeiscam": "AE-IS-CAM"}


@dataclass(frozen=True)
class Eval:
    map_key: str
    bg: float
    kind: str  # plain | label | ir

    @property
    def name(self) -> str:
        # The IR protocol ignores the row's scale (fg x ir_label.fg_background_scale, bg x ir_label.bg_...).
        return f"{self.map_key}_ir" if self.kind == "ir" else f"{self.map_key}_bg{self.bg:g}_{self.kind}"


def network_evals(network: str, with_crf: bool = True) -> list[Eval]:
    """Every evaluation of one network: its rows (plain with a sweep, +CRF label, +CRF IR), then cheap extras."""
    evals: list[Eval] = []
    for row in ROWS:
        if row.network != network:
            continue
        evals.append(Eval(row.map_key, row.bg, "plain"))
        if with_crf:
            evals.append(Eval(row.map_key, row.bg, "label"))
            evals.append(Eval(row.map_key, row.bg, "ir"))
    # diagnostics, plain only (the sweep shows every scale): the other maps of the same network
    keys = ["cam", "iscam"] + (["aeiscam"] if network != "sipe" else [])
    for key in keys:
        evals.append(Eval(key, 1.0, "plain"))
    seen, out = set(), []
    for e in evals:
        if e.name not in seen:
            seen.add(e.name)
            out.append(e)
    return out


@dataclass(frozen=True)
class View:
    """Another look at a trained network without retraining: its own folder (config copy + hard-linked
    ``stage1``) with make-cam on val under inference ``overrides`` and/or another ``checkpoint``."""

    name: str
    overrides: tuple[str, ...] = ()
    checkpoint: str | None = None  # relative to stage1/ (e.g. checkpoints/last.pt: the last, unaveraged weights)
    evals: tuple[Eval, ...] = ()


def analysis_views(args: argparse.Namespace, recipe: str, network: str) -> list[View]:
    """The extra looks at one trained network (issue 24): its last weights when final.pt is an average,
    and, for the SIPE network, AE switched on at inference only (the AE-SIPE network's IS-CAM is its
    AE-switched-off counterpart, stored by make-cam already)."""
    plain = [Eval(key, 1.0, "plain") for key in ("cam", "iscam") + (("aeiscam",) if network != "sipe" else ())]
    views = []
    if any(o.startswith("train.average_last=") and float(o.split("=")[1]) > 0 for o in args.set):
        views.append(View("last", checkpoint="checkpoints/last.pt", evals=tuple(plain)))
    if network == "sipe" and args.ae_swap:
        views.append(View("ae_at_inference", ("model.affinity_enhancement=true", "model.ae_variant=ae",
                                              "model.iscam_normalisation=true", "cam.map=aeiscam"),
                          evals=(Eval("aeiscam", 1.0, "plain"),)))
    return views


@dataclass
class Task:
    label: str            # e.g. new/sipe/s0
    run_dir: Path
    overrides: list[str]
    evals: list[Eval]
    steps: int | None = None  # steps-curve point (None: the recipe's epochs)
    extra: dict = field(default_factory=dict)
    views: list[View] = field(default_factory=list)
    calibrate: bool = False


# ------------------------------------------------------------------------------------------ running
_print_lock = threading.Lock()


def say(msg: str) -> None:
    with _print_lock:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


class Runner:
    def __init__(self, args: argparse.Namespace):
        self.a = args
        self.out: Path = args.out
        self.timings = self.out / "timings.jsonl"
        self.lock = threading.Lock()
        self.failed: list[str] = []
        self.env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        val_list = Path(args.data_root) / "ImageSets" / "Segmentation" / "val.txt"
        self.val_ids = [line.strip() for line in val_list.read_text().splitlines() if line.strip()]

    def _record(self, task: Task, step: str, wall: float, load_start: str, rc: int) -> None:
        row = {"run": task.label, "step": step, "wall_s": round(wall, 1), "load_start": load_start,
               "load_end": load(), "threads": self.a.threads, "jobs": self.a.jobs, "rc": rc,
               "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        with self.lock, self.timings.open("a") as handle:
            handle.write(json.dumps(row) + "\n")

    def _cmd(self, task: Task, step: str, argv: list[str]) -> bool:
        log = self.out / "logs" / task.label / f"{step}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        start_load, t0 = load(), time.time()
        say(f"{task.label}: {step} ... (load {start_load})")
        with log.open("w") as handle:
            handle.write(" ".join(argv) + "\n")
            handle.flush()
            rc = subprocess.call(argv, stdout=handle, stderr=subprocess.STDOUT, env=self.env, cwd=os.getcwd())
        wall = time.time() - t0
        self._record(task, step, wall, start_load, rc)
        status = "done" if rc == 0 else f"FAILED rc={rc} (see {log})"
        say(f"{task.label}: {step} {status} in {fmt_wall(wall)} (load {load()})")
        return rc == 0

    def cams_complete(self, run_dir: Path) -> bool:
        folder = run_dir / "cams" / "val"
        return folder.is_dir() and all((folder / f"{i}.npz").is_file() for i in self.val_ids)

    def run_task(self, task: Task) -> None:
        bin_ = self.a.aesipe_train
        try:
            final = task.run_dir / "stage1" / "final.pt"
            if final.is_file():
                say(f"{task.label}: train skipped (final.pt exists)")
            else:
                common = ["--recipe", str(self.a.recipe), f"data.root={self.a.data_root}",
                          f"model.pretrained={self.a.weights}"]
                if not self._cmd(task, "train", [bin_, "train", str(task.run_dir), *common, *task.overrides]):
                    raise RuntimeError("train")
            if self.cams_complete(task.run_dir):
                say(f"{task.label}: make-cam skipped (all {len(self.val_ids)} val files exist)")
            elif not self._cmd(task, "make-cam", [bin_, "make-cam", str(task.run_dir), "--split", "val"]):
                raise RuntimeError("make-cam")
            self.run_evals(task, task.label, task.run_dir, task.evals)
            for view in task.views:
                self.run_view(task, view)
            if task.calibrate:
                self.run_calibration(task)
        except RuntimeError as exc:
            with self.lock:
                self.failed.append(f"{task.label} ({exc})")
        except Exception as exc:  # noqa: BLE001 - report and go on with the other runs
            say(f"{task.label}: ERROR {exc!r}")
            with self.lock:
                self.failed.append(f"{task.label} ({exc!r})")


    def run_evals(self, task: Task, label: str, run_dir: Path, evals: Sequence[Eval]) -> None:
        bin_ = self.a.aesipe_train
        for ev in evals:
            dest = self.out / "evals" / label / f"{ev.name}.json"
            if dest.is_file():
                continue
            argv = [bin_, "eval-cam", str(run_dir), "--split", "val", "--map-key", ev.map_key,
                    f"cam.background_scale={ev.bg:g}", f"crf.workers={self.a.crf_workers}"]
            argv += ["--sweep", SWEEP] if ev.kind == "plain" else ["--crf", "--protocol", ev.kind]
            if not self._cmd(task, f"eval-{label.removeprefix(task.label).strip('/') or 'run'}-{ev.name}", argv):
                raise RuntimeError(f"eval {ev.name}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(".tmp")
            shutil.copyfile(run_dir / "cam_eval.json", tmp)
            os.replace(tmp, dest)

    def view_dir(self, task: Task, name: str) -> Path:
        """A folder that sees the task's trained network: its config and a hard-linked ``stage1``."""
        folder = self.out / "views" / task.label / name
        if not (folder / "stage1").is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(task.run_dir / "config.toml", folder / "config.toml")
            tmp = folder / "stage1.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            subprocess.check_call(["cp", "-al", str(task.run_dir / "stage1"), str(tmp)])
            os.replace(tmp, folder / "stage1")
        return folder

    def run_view(self, task: Task, view: View) -> None:
        folder = self.view_dir(task, view.name)
        label = f"{task.label}/{view.name}"
        if not self.cams_complete(folder):
            argv = [self.a.aesipe_train, "make-cam", str(folder), "--split", "val", *view.overrides]
            if view.checkpoint:
                argv += ["--checkpoint", str(folder / "stage1" / view.checkpoint)]
            if not self._cmd(task, f"make-cam-{view.name}", argv):
                raise RuntimeError(f"make-cam {view.name}")
        self.run_evals(task, label, folder, view.evals)

    def run_calibration(self, task: Task) -> None:
        """``aesipe-train calibrate`` on 20 ``train`` masks (in a view, so the run's own config stays as it
        is); the choice is then judged on val with the run's CAM files."""
        dest = self.out / "evals" / task.label / "calibration.json"
        if not dest.is_file():
            folder = self.view_dir(task, "calib")
            argv = [self.a.aesipe_train, "calibrate", str(folder), "--split", "train", "--images",
                    str(self.a.calibration_images), f"crf.workers={self.a.crf_workers}"]
            if not self._cmd(task, "calibrate", argv):
                raise RuntimeError("calibrate")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / "calibration.json", dest)
        record = read_json(dest)
        if record and record.get("crf"):  # a CRF choice is judged with the CRF (plain ones come from the sweeps)
            self.run_evals(task, task.label, task.run_dir,
                           [Eval(record["map"], float(record["background_scale"]), "label")])


def fmt_wall(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def recipe_steps(recipe: Path, data_root: Path) -> tuple[int, int]:
    """(steps per epoch, default total steps) of the recipe on the dataset's train split."""
    cfg = tomllib.loads(recipe.read_text())
    train = cfg.get("train", {})
    batch, epochs = int(train.get("batch_size", 16)), int(train.get("epochs", 5))
    split = cfg.get("data", {}).get("train_split", "train")
    n = sum(1 for line in (data_root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().splitlines() if line.strip())
    per_epoch = n // batch
    total = epochs * per_epoch
    if train.get("max_steps"):
        total = min(total, int(train["max_steps"]))
    return per_epoch, total


def build_tasks(args: argparse.Namespace) -> list[Task]:
    """All runs in the order of importance: NEW AE-SIPE and SIPE (seeds interleaved), NEW ablation networks,
    then the same for OLD, then the steps curve."""
    tasks: list[Task] = []
    runs = args.out / "runs"
    groups = [["ae_hf_norm", "sipe"], ["ae", "ae_hf"]]
    for recipe in args.recipes:
        for group in groups:
            for seed in (args.seeds if recipe == "new" else args.switch_seeds):
                for net in group:
                    if net not in args.networks or canonical_recipe(recipe, net) != recipe:
                        continue  # not asked for, or the same training as another recipe's
                    label = f"{recipe}/{net}/s{seed}"
                    task = Task(label, runs / recipe / net / f"s{seed}",
                                [*NETWORKS[net], *RECIPES[recipe], *args.set, f"train.seed={seed}"],
                                network_evals(net, not args.no_crf and seed in args.crf_seeds and recipe in args.crf_recipes))
                    task.views, task.calibrate = analysis_views(args, recipe, net), args.calibrate
                    tasks.append(task)
    if args.steps_curve:
        per_epoch, default = recipe_steps(args.recipe, args.data_root)
        for steps in sorted(args.steps_curve, reverse=True):  # the longest first: shorter ones fill the other job
            label = "new/ae_hf_norm/s0" if steps == default else f"new/ae_hf_norm_{steps}steps/s0"
            overrides = [*NETWORKS["ae_hf_norm"], *args.set, "train.seed=0"]
            if steps != default:
                overrides += [f"train.epochs={math.ceil(steps / per_epoch)}", f"train.max_steps={steps}"]
            evals = [Eval(key, 1.0, "plain") for key in ("aeiscam", "iscam", "cam")]  # the sweep holds x0.8 too
            existing = next((t for t in tasks if t.label == label), None)
            if existing is not None:  # the 170-step point is the main seed-0 run: add what it lacks
                existing.evals += [e for e in evals if e.name not in {x.name for x in existing.evals}]
                existing.steps = steps
                continue
            tasks.append(Task(label, runs / label, overrides, evals, steps))
    return tasks


# ------------------------------------------------------------------------------------------ tables
def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def value(out: Path, label: str, ev: Eval, bg: float | None = None) -> float | None:
    """mIoU in % of one evaluation (plain: at ``bg`` from the sweep, default the eval's own scale)."""
    doc = read_json(out / "evals" / label / f"{ev.name}.json")
    if doc is None:
        return None
    if ev.kind == "plain":
        want = ev.bg if bg is None else bg
        for row in doc.get("sweep", []):
            if abs(row["background_scale"] - want) < 1e-9:
                return None if row["miou"] is None else 100 * row["miou"]
        return None
    crf = doc.get("crf_eval") or {}
    return None if crf.get("miou") is None else 100 * crf["miou"]


def mean_std(values: list[float | None], expected: int) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    text = f"{statistics.fmean(vals):.1f} ± {statistics.stdev(vals):.1f}" if len(vals) > 1 else f"{vals[0]:.1f}"
    return text + (f" (n={len(vals)})" if len(vals) != expected else "")


def table_main(out: Path, recipes: list[str], seeds: list[int]) -> str:
    head = "| row | map | bg | " + " | ".join(
        f"{r.upper()} {c}" for r in recipes for c in ("plain", "+CRF label", "+CRF IR")) + " |"
    lines = [head, "|" + "---|" * (3 + 3 * len(recipes))]
    for row in ROWS:
        cells = []
        for recipe in recipes:
            labels = [f"{recipe}/{row.network}/s{s}" for s in seeds]
            for kind in ("plain", "label", "ir"):
                cells.append(mean_std([value(out, lab, Eval(row.map_key, row.bg, kind)) for lab in labels], len(seeds)))
        lines.append(f"| {row.name} | {MAP_NAMES[row.map_key]} | {row.bg:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_seeds(out: Path, recipes: list[str], seeds: list[int]) -> str:
    lines = ["| row | " + " | ".join(f"{r.upper()} plain, seeds {'/'.join(map(str, seeds))}" for r in recipes)
             + " | " + " | ".join(f"{r.upper()} +CRF label, per seed" for r in recipes) + " |",
             "|" + "---|" * (1 + 2 * len(recipes))]
    for row in ROWS:
        cells = []
        for kind in ("plain", "label"):
            for recipe in recipes:
                vals = [value(out, f"{recipe}/{row.network}/s{s}", Eval(row.map_key, row.bg, kind)) for s in seeds]
                cells.append(" / ".join("-" if v is None else f"{v:.1f}" for v in vals))
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_sweep(out: Path, recipe: str, seeds: list[int]) -> str:
    scales = [float(s) for s in SWEEP.split(",")]
    lines = ["| network | map | " + " | ".join(f"x{s:g}" for s in scales) + " |", "|" + "---|" * (2 + len(scales))]
    for net in NETWORKS:
        for key in (["cam", "iscam"] + (["aeiscam"] if net != "sipe" else [])):
            cells = [mean_std([value(out, f"{recipe}/{net}/s{s}", Eval(key, 1.0, "plain"), bg) for s in seeds], len(seeds))
                     for bg in scales]
            lines.append(f"| {net} | {MAP_NAMES[key]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _per_class(out: Path, label: str, ev: Eval) -> dict | None:
    doc = read_json(out / "evals" / label / f"{ev.name}.json")
    if doc is None:
        return None
    return doc["crf_eval"]["per_class"] if ev.kind != "plain" else doc["per_class"]


def table_classes(out: Path, recipe: str, seeds: list[int]) -> str:
    picks = [ROWS[1], ROWS[2], ROWS[5], ROWS[6]]  # CAM (AE-SIPE net), SIPE, +norm (x1.0), AE-SIPE (x0.8)
    per: list[list[dict]] = []
    for row in picks:
        docs = [_per_class(out, f"{recipe}/{row.network}/s{s}", Eval(row.map_key, row.bg, "plain")) for s in seeds]
        per.append([d for d in docs if d])
    if not any(per):
        return "(no per-class results yet)"
    names = list(next(d for p in per for d in p).keys())
    head = "| class | GT px | " + " | ".join(f"{r.name} IoU / P / R" for r in picks) + " |"
    lines = [head, "|" + "---|" * (2 + len(picks))]

    def avg(docs: list[dict], name: str, key: str) -> str:
        vals = [d[name][key] for d in docs if d[name][key] is not None]
        return "-" if not vals else f"{100 * statistics.fmean(vals):.0f}"

    for name in names:
        gt = next((d[name]["gt_pixels"] for p in per for d in p), 0)
        cells = [" / ".join(avg(p, name, k) for k in ("iou", "precision", "recall")) if p else "-" for p in per]
        lines.append(f"| {name} | {gt} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _train_wall(out: Path, label: str) -> tuple[str, str]:
    rows = []
    if (out / "timings.jsonl").is_file():
        rows = [json.loads(x) for x in (out / "timings.jsonl").read_text().splitlines() if x.strip()]
    hits = [r for r in rows if r["run"] == label and r["step"] == "train" and r["rc"] == 0]
    if not hits:
        return "-", "-"
    return fmt_wall(hits[-1]["wall_s"]), hits[-1]["load_start"]


def _final_loss(run_dir: Path) -> str:
    import csv

    path = run_dir / "stage1" / "log.csv"
    try:
        rows = list(csv.DictReader(path.open()))
    except OSError:
        return "-"
    if not rows:
        return "-"
    last = rows[-1]
    return f"{float(last['loss_cls']):.3f} / {float(last['loss_gsc']):.3f}"


def table_curve(out: Path, curve: list[int], default: int) -> str:
    lines = ["| steps | AE-IS-CAM x0.8 | AE-IS-CAM x1.0 | IS-CAM x0.8 | IS-CAM x1.0 | CAM x0.8 | CAM x1.0 "
             "| final loss cls / gsc | train wall (load) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for steps in curve:
        label = "new/ae_hf_norm/s0" if steps == default else f"new/ae_hf_norm_{steps}steps/s0"

        def v(key: str, bg: float, label: str = label) -> str:
            x = value(out, label, Eval(key, 1.0, "plain"), bg)
            return "-" if x is None else f"{x:.1f}"

        wall, ld = _train_wall(out, label)
        lines.append(f"| {steps} | {v('aeiscam', 0.8)} | {v('aeiscam', 1.0)} | {v('iscam', 0.8)} | {v('iscam', 1.0)} | "
                     f"{v('cam', 0.8)} | {v('cam', 1.0)} | {_final_loss(out / 'runs' / label)} | {wall} ({ld}) |")
    return "\n".join(lines)


def table_timings(out: Path) -> str:
    path = out / "timings.jsonl"
    if not path.is_file():
        return "(no timings yet)"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    runs: dict[str, dict] = {}
    for r in rows:
        if r["rc"] != 0:
            continue
        d = runs.setdefault(r["run"], {"train": None, "make-cam": None, "eval": 0.0, "crf": 0.0, "loads": []})
        if r["step"] in ("train", "make-cam"):
            d[r["step"]] = r["wall_s"]
        elif r["step"].endswith(("_label", "_ir")):
            d["crf"] += r["wall_s"]
        else:
            d["eval"] += r["wall_s"]
        d["loads"].append(r["load_start"].split("/")[0])
        d["loads"].append(r["load_end"].split("/")[0])
        d["threads"], d["jobs"] = r["threads"], r["jobs"]
    lines = ["| run | train | make-cam (58 val) | plain evals | CRF evals | load (1-min avg, min-max over its steps) "
             "| threads x parallel jobs |",
             "|---|---|---|---|---|---|---|"]
    for name, d in runs.items():
        loads = [float(x) for x in d["loads"]]
        f = lambda s: "-" if s is None else fmt_wall(s)  # noqa: E731
        lines.append(f"| {name} | {f(d['train'])} | {f(d['make-cam'])} | {fmt_wall(d['eval'])} | {fmt_wall(d['crf'])} | "
                     f"{min(loads):.1f}-{max(loads):.1f} | {d['threads']} x {d['jobs']} |")
    total = sum(r["wall_s"] for r in rows)
    lines.append(f"\nsum of step wall times: {fmt_wall(total)} (steps of parallel jobs overlap in real time)")
    return "\n".join(lines)


def print_tables(args: argparse.Namespace) -> None:
    out, recipes, seeds = args.out, args.recipes, args.seeds
    print("\n## Table 2 in miniature: val mIoU (%), mean ± std over seeds", ", ".join(map(str, seeds)))
    print("(IR protocol: fg_conf at background x1.0, bg_conf at x0.8 whatever the row's scale; unsure = background)\n")
    print(table_main(out, recipes, seeds))
    print("\n### Per seed\n")
    print(table_seeds(out, recipes, seeds))
    for recipe in recipes:
        print(f"\n### Background-scale sweep ({recipe.upper()}, plain, mean ± std; for information, nothing selected)\n")
        print(table_sweep(out, recipe, seeds))
    for recipe in recipes:
        print(f"\n### Per class ({recipe.upper()}, plain, mean over seeds, %): IoU / precision / recall\n")
        print(table_classes(out, recipe, seeds))
    if args.steps_curve:
        _, default = recipe_steps(args.recipe, args.data_root)
        print("\n### Steps curve (NEW recipe, AE-SIPE network, seed 0; each its own poly schedule)\n")
        print(table_curve(out, args.steps_curve, default))
    import msrc_method_tables

    msrc_method_tables.print_method_tables(args)
    if args.irn_study:
        import msrc_irn_study

        print("\n## Issue 24: IRN on top of the calibrated AE-SIPE network (seed 0), random-walk pseudo-labels on train\n")
        print(msrc_irn_study.table(out, args.irn_study))
    print("\n### Wall times\n")
    print(table_timings(out))


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_root", type=Path, help="msrc21-voc folder (VOC layout)")
    p.add_argument("weights", type=Path, help="ImageNet MobileNetV2 state_dict (.pth)")
    p.add_argument("out", type=Path, help="output folder (run directories, evaluation JSON, logs)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    p.add_argument("--recipes", default="new,old", help="new, old or new,old (default)")
    p.add_argument("--steps-curve", nargs="?", const="85,170,340,680", default=None,
                   help="also train the AE-SIPE network (NEW, seed 0) for these step counts (default 85,170,340,680)")
    p.add_argument("--aesipe-train", default=shutil.which("aesipe-train"), help="aesipe-train binary (default: on PATH)")
    p.add_argument("--recipe", type=Path, default=Path("configs/msrc_mobilenet.toml"), help="base recipe")
    p.add_argument("--jobs", type=int, default=2, help="runs side by side (default 2)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each command (default 1)")
    p.add_argument("--crf-workers", type=int, default=2, help="crf.workers of the CRF evaluations (default 2)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra dotted override for every training (repeatable; e.g. a smoke test: train.max_steps=2)")
    p.add_argument("--no-crf", action="store_true", help="skip the +CRF evaluations")
    p.add_argument("--crf-seeds", default=None, help="only these seeds get the +CRF evaluations (default: all)")
    p.add_argument("--crf-recipes", default=None, help="only these recipes get the +CRF evaluations (default: all)")
    p.add_argument("--switch-seeds", default=None, help="seeds of the recipes other than new (default: --seeds)")
    p.add_argument("--networks", default="sipe,ae,ae_hf,ae_hf_norm",
                   help="networks to train (default all four; the switches need only sipe,ae_hf_norm)")
    p.add_argument("--calibrate", action="store_true",
                   help="also calibrate every network on 20 train masks (map, background scale, CRF) and judge the choice on val")
    p.add_argument("--calibration-images", type=int, default=20, help="masks the calibration uses (default 20)")
    p.add_argument("--ae-swap", action="store_true", help="also make the SIPE networks' maps with AE at inference")
    p.add_argument("--irn-study", default=None, metavar="SEEDS",
                   help="after the stage-1 runs, the IRN study on new/ae_hf_norm/s0 with these IRN seeds, e.g. 0,1 "
                        "(benchmarks/msrc_irn_study.py)")
    p.add_argument("--only", default=None, metavar="LABELS",
                   help="run only these runs, in this order: comma-separated recipe/network/sSEED labels")
    p.add_argument("--only-irn-study", action="store_true", help="run the IRN study alone (its network trained already)")
    p.add_argument("--pipeline-recipe", type=Path, default=Path("configs/msrc_pipeline.toml"),
                   help="recipe of the IRN study's pipeline (default configs/msrc_pipeline.toml)")
    p.add_argument("--tables-only", action="store_true", help="print the tables from what is there; run nothing")
    a = p.parse_args(argv)
    a.seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    a.crf_seeds = a.seeds if a.crf_seeds is None else [int(s) for s in a.crf_seeds.split(",") if s.strip()]
    a.switch_seeds = a.seeds if a.switch_seeds is None else [int(s) for s in a.switch_seeds.split(",") if s.strip()]
    a.crf_recipes = list(RECIPES) if a.crf_recipes is None else [r.strip() for r in a.crf_recipes.split(",")]
    a.irn_study = [int(s) for s in a.irn_study.split(",") if s.strip()] if a.irn_study else []
    a.only = [x.strip() for x in a.only.split(",") if x.strip()] if a.only else []
    a.pipeline_recipe = a.pipeline_recipe.resolve()
    a.networks = [n.strip() for n in a.networks.split(",") if n.strip()]
    if set(a.networks) - set(NETWORKS):
        p.error(f"--networks takes {', '.join(NETWORKS)}")
    a.recipes = [r.strip() for r in a.recipes.split(",") if r.strip()]
    bad = [r for r in a.recipes if r not in RECIPES]
    if bad:
        p.error(f"--recipes takes {', '.join(RECIPES)}, not {bad}")
    a.steps_curve = [int(s) for s in a.steps_curve.split(",")] if a.steps_curve else []
    a.data_root, a.weights, a.out = a.data_root.resolve(), a.weights.resolve(), a.out.resolve()
    if not a.tables_only:
        if not a.aesipe_train:
            p.error("aesipe-train not on PATH: pass --aesipe-train")
        if not a.recipe.is_file():
            p.error(f"recipe not found: {a.recipe} (run from a checkout or pass --recipe)")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tables_only:
        print_tables(args)
        return 0
    tasks = [] if args.only_irn_study else build_tasks(args)
    if args.only:  # these runs, in this order (e.g. by priority when compute is short)
        by_label = {t.label: t for t in tasks}
        missing = [label for label in args.only if label not in by_label]
        if missing:
            raise SystemExit(f"--only: {missing} are not runs of these --recipes/--networks/--seeds")
        tasks = [by_label[label] for label in args.only]
    say(f"{len(tasks)} runs, {args.jobs} at a time, OMP_NUM_THREADS={args.threads}, binary {args.aesipe_train}, "
        f"out {args.out} (load {load()})")
    runner = Runner(args)
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(runner.run_task, tasks))
    if args.irn_study:
        import msrc_irn_study

        study = Task("irn/study", args.out / "irn", [], [])
        try:
            msrc_irn_study.run_study(runner, study, args.irn_study, args.jobs)
        except RuntimeError as exc:
            runner.failed.append(f"irn study ({exc})")
    say(f"all runs finished in {fmt_wall(time.time() - t0)} (load {load()})")
    print_tables(args)
    if runner.failed:
        print("\nFAILED: " + "; ".join(runner.failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
