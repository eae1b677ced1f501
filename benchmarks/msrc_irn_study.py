"""Issue 24, item 5: which change turned IRN's gain on MSRC into a loss (run by ``msrc_table2.py --irn-study``).

The stage-1 network is the NEW AE-SIPE network of seed 0 (``runs/new/ae_hf_norm/s0``, trained by the main
command), calibrated on 20 ``train`` masks for its AE-IS-CAM background scale (as in the issue's check), with
``configs/msrc_pipeline.toml`` on top: CAMs of the 277 ``train`` photos, stage-1 pseudo-labels judged there.
Then IR labels -> IRN -> random walk -> random-walk pseudo-labels judged on ``train`` (the VOC convention),
for each variant and IRN seed:

  default           this checkout: irn.lr 0.01 (momentum 0.9), IR labels at the calibrated pair
                    (fg x scale/0.8, bg x scale)
  lr0.1             irn.lr=0.1 (momentum 0.9): the IRN step of the release whose IRN gained 7.7 points
  ir_authors        the authors' IR-label pair, fg x1.0 / bg x0.8, whatever the calibration says
  lr0.1_ir_authors  both: the previous release's IRN settings

and each walked twice: ``walk`` (the maps as they are, the authors' walk) and ``walk_bg`` (background x the
calibrated scale first, ``random_walk.scale_background=true``). IR labels are made once per pair and
hard-linked into the variants; a variant's walk_bg folder hard-links its trained IRN. Layout:
OUT/irn/base, OUT/irn/ir_<pair>, OUT/irn/<variant>/s<seed>[_bg]; evaluations in OUT/evals/irn/...
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "lr0.1_ir_authors": ["irn.lr=0.1", "ir_label.fg_background_scale=1.0", "ir_label.bg_background_scale=0.8"],
    "lr0.1": ["irn.lr=0.1"],
    "ir_authors": ["ir_label.fg_background_scale=1.0", "ir_label.bg_background_scale=0.8"],
}
IR_PAIR = {"default": "calibrated", "lr0.1": "calibrated", "ir_authors": "authors", "lr0.1_ir_authors": "authors"}
BASE_NETWORK = "new/ae_hf_norm/s0"
EVAL_SNIPPET = (
    "import json, sys; from aesipe.train.runconfig import resolve_run_config; "
    "from aesipe.train.stages.seg_eval import evaluate_label_dir; from pathlib import Path; "
    "cfg = resolve_run_config(sys.argv[1]); r = evaluate_label_dir(cfg, Path(sys.argv[1]) / sys.argv[2], 'train', progress=False); "
    "Path(sys.argv[3]).write_text(json.dumps(r, indent=1))"
)


def _link_copy(source: Path, dest: Path, parts: list[str]) -> None:
    """``dest`` with a copy of ``source``'s config and hard links of its ``parts`` (folders)."""
    dest.mkdir(parents=True, exist_ok=True)
    if not (dest / "config.toml").is_file():
        shutil.copyfile(source / "config.toml", dest / "config.toml")
    for part in parts:
        if not (dest / part).exists() and (source / part).exists():
            (dest / part).parent.mkdir(parents=True, exist_ok=True)
            tmp = dest / f"{part}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            subprocess.check_call(["cp", "-al", str(source / part), str(tmp)])
            os.replace(tmp, dest / part)


def _copy_eval(runner, src: Path, label: str, name: str) -> None:
    dest = runner.out / "evals" / label / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def run_study(runner, task, seeds: list[int], jobs: int) -> None:
    """All steps, each skipped when its result exists (resumable); the variants ``jobs`` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    root = prepare(runner, task)
    todo = [(variant, seed) for seed in seeds for variant in VARIANTS]

    def one(item: tuple[str, int]) -> None:
        variant, seed = item
        try:
            _run_variant(runner, task, root, variant, seed, VARIANTS[variant])
        except RuntimeError as exc:
            with runner.lock:
                runner.failed.append(f"irn/{variant}/s{seed} ({exc})")

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, todo))


def prepare(runner, task) -> Path:
    """The calibrated base run, its train CAMs and stage-1 evaluation, and the two IR-label sets."""
    a, out = runner.a, runner.out
    bin_ = a.aesipe_train
    network = out / "runs" / BASE_NETWORK
    if not (network / "stage1" / "final.pt").is_file():
        raise RuntimeError(f"{BASE_NETWORK} is not trained yet: run the main command first")
    root = out / "irn"
    base = root / "base"
    common = ["--recipe", str(a.pipeline_recipe), f"data.root={a.data_root}", f"model.pretrained={a.weights}",
              f"crf.workers={a.crf_workers}", f"ir_label.workers={a.crf_workers}"]
    evals = out / "evals" / "irn"
    _link_copy(network, base, ["stage1"])
    if not (evals / "base" / "calibration.json").is_file():
        if not runner._cmd(task, "calibrate", [bin_, "calibrate", str(base), "--split", "train", "--images",
                                               str(a.calibration_images), "--maps", "aeiscam", "--no-crf", *common]):
            raise RuntimeError("calibrate")
        _copy_eval(runner, base / "calibration.json", "irn/base", "calibration.json")
    if not (evals / "base" / "stage1_train.json").is_file():
        if not runner._cmd(task, "make-cam-train", [bin_, "make-cam", str(base), "--split", "train"]):
            raise RuntimeError("make-cam")
        if not runner._cmd(task, "eval-cam-train", [bin_, "eval-cam", str(base), "--split", "train"]):
            raise RuntimeError("eval-cam")
        _copy_eval(runner, base / "cam_eval.json", "irn/base", "stage1_train.json")
    pairs = {"calibrated": [], "authors": VARIANTS["ir_authors"]}
    for pair, overrides in pairs.items():
        folder = root / f"ir_{pair}"
        if not (folder / "ir_labels" / ".done").is_file():
            _link_copy(base, folder, ["stage1", "cams"])
            if not runner._cmd(task, f"ir-label-{pair}", [bin_, "ir-label", str(folder), *overrides]):
                raise RuntimeError("ir-label")
            (folder / "ir_labels" / ".done").write_text("")
    return root


def _run_variant(runner, task, root: Path, variant: str, seed: int, overrides: list[str]) -> None:
    bin_ = runner.a.aesipe_train
    label = f"irn/{variant}/s{seed}"
    folder = root / variant / f"s{seed}"
    evals = runner.out / "evals" / label
    if not (evals / "walk.json").is_file():
        _link_copy(root / f"ir_{IR_PAIR[variant]}", folder, ["stage1", "cams", "ir_labels"])
        # Stage by stage (the pipeline command would rewrite stage1/final.pt and so remake the shared CAMs).
        for step in ("irn", "make-seg-labels"):
            if not runner._cmd(task, f"{variant}-s{seed}-{step}", [bin_, step, str(folder), f"irn.seed={seed}", *overrides]):
                raise RuntimeError(f"{label} {step}")
        _evaluate(runner, task, folder, label, "walk.json")
    if not (evals / "walk_bg.json").is_file():
        walked = folder.with_name(f"s{seed}_bg")
        _link_copy(folder, walked, ["stage1", "cams", "ir_labels", "irn"])
        argv = [bin_, "make-seg-labels", str(walked), "random_walk.scale_background=true"]
        if not runner._cmd(task, f"{variant}-s{seed}-walk-bg", argv):
            raise RuntimeError(f"{label} walk_bg")
        _evaluate(runner, task, walked, label, "walk_bg.json")


def _evaluate(runner, task, folder: Path, label: str, name: str) -> None:
    dest = runner.out / "evals" / label / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    python = str(Path(runner.a.aesipe_train).parent / "venv" / "bin" / "python")
    python = python if Path(python).is_file() else sys.executable
    if not runner._cmd(task, f"eval-{name}", [python, "-c", EVAL_SNIPPET, str(folder), "seg_labels/train", str(dest)]):
        raise RuntimeError(f"{label} eval")


def _miou(path: Path) -> float | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return None if doc.get("miou") is None else 100 * doc["miou"]


def table(out: Path, seeds: list[int]) -> str:
    evals = out / "evals" / "irn"
    calib = {}
    try:
        calib = json.loads((evals / "base" / "calibration.json").read_text())
    except (OSError, ValueError):
        pass
    stage1 = _miou(evals / "base" / "stage1_train.json")
    lines = [f"stage-1 pseudo-labels (AE-IS-CAM x{calib.get('background_scale', '?')}, calibrated on 20 train masks), "
             f"train: {'-' if stage1 is None else f'{stage1:.1f}'}", "",
             "| variant | irn.lr | IR labels fg / bg | " + " | ".join(f"walk s{s} | walk_bg s{s}" for s in seeds)
             + " | mean walk (vs stage 1) | mean walk_bg (vs stage 1) |",
             "|" + "---|" * (5 + 2 * len(seeds))]
    ir = calib.get("ir_label", {})
    pair = {"calibrated": f"{ir.get('fg_background_scale', '?')} / {ir.get('bg_background_scale', '?')}",
            "authors": "1.0 / 0.8"}
    for variant, overrides in VARIANTS.items():
        cells, means = [], {"walk": [], "walk_bg": []}
        for seed in seeds:
            for kind in ("walk", "walk_bg"):
                v = _miou(evals / variant / f"s{seed}" / f"{kind}.json")
                cells.append("-" if v is None else f"{v:.1f}")
                if v is not None:
                    means[kind].append(v)

        def mean(kind: str, means: dict = means) -> str:
            vals = means[kind]
            if not vals:
                return "-"
            m = sum(vals) / len(vals)
            return f"{m:.1f} ({m - stage1:+.1f})" if stage1 is not None else f"{m:.1f}"

        lr = "0.1" if "irn.lr=0.1" in overrides else "0.01"
        lines.append(f"| {variant} | {lr} | {pair[IR_PAIR[variant]]} | " + " | ".join(cells)
                     + f" | {mean('walk')} | {mean('walk_bg')} |")
    return "\n".join(lines)
