"""Issue 24's tables, printed by ``msrc_table2.py`` from the evaluation JSON files it collects (no training here).

All figures are val mIoU (%) of the stage-1 pseudo-labels (58 MSRC val photos, plain argmax unless a row says
+CRF). ``final`` = the run's ``final.pt`` (the weights averaged over the last half of the steps when trained
with ``train.average_last=0.5``), ``last`` = the last weights of the same training (``checkpoints/last.pt``).
"""
from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

MAP_NAMES = {"cam": "CAM", "iscam": "IS-CAM", "aeiscam": "AE-IS-CAM"}
NETWORK_NAMES = {"sipe": "SIPE", "ae_hf_norm": "AE-SIPE"}
DEFAULTS = {"sipe": ("iscam", 1.0), "ae_hf_norm": ("aeiscam", 0.8)}  # the Table-2 rows' fixed choice


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sweep_value(out: Path, label: str, key: str, bg: float) -> float | None:
    """val mIoU of ``key`` at ``bg`` from the plain sweep of the run (or view) ``label``."""
    doc = read_json(out / "evals" / label / f"{key}_bg1_plain.json")
    for row in (doc or {}).get("sweep", []):
        if abs(row["background_scale"] - bg) < 1e-6 and row["miou"] is not None:
            return 100 * row["miou"]
    return None


def best_on_val(out: Path, label: str, keys: tuple[str, ...]) -> tuple[str, float] | None:
    """The best map and scale *on val* (an oracle no user has: for information only)."""
    best = None
    for key in keys:
        doc = read_json(out / "evals" / label / f"{key}_bg1_plain.json")
        for row in (doc or {}).get("sweep", []):
            if row["miou"] is not None and (best is None or 100 * row["miou"] > best[1]):
                best = (f"{MAP_NAMES[key]} x{row['background_scale']:g}", 100 * row["miou"])
    return best


def calibrated(out: Path, label: str) -> dict | None:
    """The calibration's choice (20 train masks) and its val mIoU (plain from the sweep, +CRF from its eval)."""
    record = read_json(out / "evals" / label / "calibration.json")
    if record is None:
        return None
    key, bg = record["map"], float(record["background_scale"])
    if record.get("crf"):
        doc = read_json(out / "evals" / label / f"{key}_bg{bg:g}_label.json")
        crf = (doc or {}).get("crf_eval") or {}
        val = None if crf.get("miou") is None else 100 * crf["miou"]
    else:
        val = sweep_value(out, label, key, bg)
    choice = f"{MAP_NAMES[key]} x{bg:g}" + (" +CRF" if record.get("crf") else "")
    return {"choice": choice, "calib": None if record["miou"] is None else 100 * record["miou"], "val": val,
            "record": record}


def stats(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if len(vals) < 2:
        return "-" if not vals else f"{vals[0]:.1f}"
    return f"{statistics.fmean(vals):.1f} ± {statistics.stdev(vals):.1f} (range {max(vals) - min(vals):.1f})"


def cells(values: list[float | None]) -> str:
    return " / ".join("-" if v is None else f"{v:.1f}" for v in values)


def table_calibration(out: Path, seeds: list[int], recipe: str = "new") -> str:
    lines = ["| network | seed | chosen on 20 train masks | mIoU on them | val: chosen | val: fixed default "
             "| val: best on val (oracle) |", "|---|---|---|---|---|---|---|"]
    for net, (key, bg) in DEFAULTS.items():
        keys = ("cam", "iscam") + (("aeiscam",) if net != "sipe" else ())
        for seed in seeds:
            label = f"{recipe}/{net}/s{seed}"
            cal = calibrated(out, label)
            fixed = sweep_value(out, label, key, bg)
            oracle = best_on_val(out, label, keys)
            lines.append(f"| {NETWORK_NAMES[net]} | {seed} | {cal['choice'] if cal else '-'} | "
                         f"{_f(cal and cal['calib'])} | {_f(cal and cal['val'])} | {_f(fixed)} ({MAP_NAMES[key]} x{bg:g}) | "
                         f"{'-' if oracle is None else f'{oracle[1]:.1f} ({oracle[0]})'} |")
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def spread_rows(out: Path, seeds: list[int], recipe: str = "new") -> list[tuple[str, list[float | None]]]:
    rows = []
    for net, (key, bg) in DEFAULTS.items():
        name = NETWORK_NAMES[net]
        for view, tag in (("", "final"), ("/last", "last")):
            rows.append((f"{name} {MAP_NAMES[key]} x{bg:g} (fixed), {tag}",
                         [sweep_value(out, f"{recipe}/{net}/s{s}{view}", key, bg) for s in seeds]))
            if bg != 1.0:
                rows.append((f"{name} {MAP_NAMES[key]} x1.0, {tag}",
                             [sweep_value(out, f"{recipe}/{net}/s{s}{view}", key, 1.0) for s in seeds]))
        rows.append((f"{name} calibrated on 20 masks, final",
                     [(calibrated(out, f"{recipe}/{net}/s{s}") or {}).get("val") for s in seeds]))
    return rows


def table_spread(out: Path, seeds: list[int], recipe: str = "new") -> str:
    lines = [f"| pseudo-labels | seeds {'/'.join(map(str, seeds))} | mean ± std (range) |", "|---|---|---|"]
    for name, values in spread_rows(out, seeds, recipe):
        lines.append(f"| {name} | {cells(values)} | {stats(values)} |")
    return "\n".join(lines)


def table_best_of(out: Path, seeds: list[int], k: int, recipe: str = "new") -> str:
    """Train ``k`` seeds, keep the one whose calibration scored best on its 20 masks: every ``k``-subset."""
    lines = [f"| network | kept of {k} (each {k}-subset of seeds {','.join(map(str, seeds))}) | val of the kept one "
             "| mean ± std (range) |", "|---|---|---|---|"]
    for net in DEFAULTS:
        cal = {s: calibrated(out, f"{recipe}/{net}/s{s}") for s in seeds}
        ready = [s for s in seeds if cal[s] and cal[s]["calib"] is not None and cal[s]["val"] is not None]
        kept, vals = [], []
        for subset in itertools.combinations(ready, k):
            best = max(subset, key=lambda s: cal[s]["calib"])
            kept.append(f"{''.join(map(str, subset))}->{best}")
            vals.append(cal[best]["val"])
        lines.append(f"| {NETWORK_NAMES[net]} | {' '.join(kept) or '-'} | {cells(vals)} | {stats(vals)} |")
    return "\n".join(lines)


def table_switches(out: Path, seeds: list[int], recipes: list[str], view: str = "") -> str:
    """Each switch of OLD alone, paired by seed with NEW (SIPE trains the same under the AE-only switches)."""
    from msrc_table2 import canonical_recipe

    lines = ["| network | recipe | map | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | vs NEW per seed "
             "| better in every seed |", "|" + "---|" * (6 + len(seeds))]
    for net in DEFAULTS:
        key = DEFAULTS[net][0]
        base = [sweep_value(out, f"new/{net}/s{s}{view}", key, 1.0) for s in seeds]
        for recipe in recipes:
            trained = canonical_recipe(recipe, net)
            if recipe != "new" and trained == "new":
                continue  # the same training as NEW
            vals = [sweep_value(out, f"{trained}/{net}/s{s}{view}", key, 1.0) for s in seeds]
            diff = [None if a is None or b is None else a - b for a, b in zip(vals, base)]
            every = "-" if recipe == "new" or None in diff else ("yes" if all(d > 0 for d in diff) else "no")
            shown = recipe if trained == recipe else f"{recipe} (= {trained})"
            lines.append(f"| {NETWORK_NAMES[net]} | {shown} | {MAP_NAMES[key]} x1.0 | " + " | ".join(_f(v) for v in vals)
                         + f" | {stats(vals)} | {'' if recipe == 'new' else ' / '.join('-' if d is None else f'{d:+.1f}' for d in diff)}"
                         f" | {every} |")
    return "\n".join(lines)


AE_COLUMNS = (
    ("SIPE-trained, IS-CAM", "sipe", "", "iscam"),
    ("SIPE-trained, AE at inference", "sipe", "/ae_at_inference", "aeiscam"),
    ("AE-SIPE-trained, IS-CAM", "ae_hf_norm", "", "iscam"),
    ("AE-SIPE-trained, AE-IS-CAM", "ae_hf_norm", "", "aeiscam"),
)


def table_ae_where(out: Path, seeds: list[int], recipe: str = "new") -> str:
    """AE at training vs at inference: mIoU at x1.0 per seed."""
    lines = ["| maps | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |", "|" + "---|" * (2 + len(seeds))]
    for name, net, view, key in AE_COLUMNS:
        vals = [sweep_value(out, f"{recipe}/{net}/s{s}{view}", key, 1.0) for s in seeds]
        lines.append(f"| {name} | " + " | ".join(_f(v) for v in vals) + f" | {stats(vals)} |")
    return "\n".join(lines)


def table_ae_classes(out: Path, seeds: list[int], recipe: str = "new") -> str:
    """Per class at x1.0, mean over seeds: IoU / precision / recall for the four maps of ``AE_COLUMNS``."""
    docs = []
    for _, net, view, key in AE_COLUMNS:
        found = [read_json(out / "evals" / f"{recipe}/{net}/s{s}{view}" / f"{key}_bg1_plain.json") for s in seeds]
        docs.append([d["per_class"] for d in found if d])
    if not any(docs):
        return "(no per-class results yet)"
    names = list(next(d for col in docs for d in col).keys())
    lines = ["| class | GT px | " + " | ".join(f"{c[0]} IoU / P / R" for c in AE_COLUMNS) + " |",
             "|" + "---|" * (2 + len(AE_COLUMNS))]

    def avg(col: list[dict], name: str, field: str) -> str:
        vals = [d[name][field] for d in col if d[name][field] is not None]
        return "-" if not vals else f"{100 * statistics.fmean(vals):.0f}"

    for name in names:
        gt = next((d[name]["gt_pixels"] for col in docs for d in col), 0)
        if not gt:
            continue
        row = [" / ".join(avg(col, name, f) for f in ("iou", "precision", "recall")) if col else "-" for col in docs]
        lines.append(f"| {name} | {gt} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def print_method_tables(args) -> None:
    out, seeds = args.out, args.seeds
    print("\n## Issue 24: the seed spread of the pseudo-labels (val mIoU %, NEW recipe)\n")
    print(table_spread(out, seeds))
    print("\n### Several seeds, the best kept by the calibration masks\n")
    print(table_best_of(out, seeds, 3))
    print("\n### Several seeds' maps averaged (an ensemble; offline, from the runs' CAM files)\n")
    print(table_ensemble(out, args.data_root, seeds, 3))
    print("\n### Calibration: map, background scale and CRF chosen on 20 train masks, judged on val\n")
    print(table_calibration(out, seeds))
    switch_recipes = [r for r in args.recipes if r != "new"]
    if switch_recipes:
        for view, what in (("", "final (averaged) weights"), ("/last", "last weights")):
            print(f"\n### The recipe switches one at a time, {what} (val mIoU at x1.0)\n")
            print(table_switches(out, args.switch_seeds, ["new", *switch_recipes], view))
    print("\n### A tagged class with an all-zero map, and its stand-ins (val mIoU %)\n")
    print(table_zero_maps(out, seeds))
    print("\n### AE at training vs at inference (val mIoU at x1.0)\n")
    print(table_ae_where(out, seeds))
    print("\n### Where AE changes the maps: per class at x1.0, mean over seeds (%)\n")
    print(table_ae_classes(out, seeds))


def ensemble_miou(out: Path, data_root: Path, labels: list[str], key: str, bg: float) -> float | None:
    """val mIoU of the maps of several runs averaged (each max-normalised, as make-cam stores them), then
    the pseudo-label rule at ``bg``: an ensemble of seeds, judged offline from the runs' CAM files."""

    from aesipe.config import RunConfig, from_dict
    from aesipe.data import open_dataset
    from aesipe.pseudo_labels import max_normalise, to_labels
    from aesipe.train.metrics import ConfusionMatrix, confusion_matrix
    from aesipe.train.stages.evaluate import load_cam_file

    folders = [out / "runs" / label / "cams" / "val" for label in labels]
    if not all(f.is_dir() for f in folders):
        return None
    ds = open_dataset(from_dict(RunConfig, {"data": {"root": str(data_root), "kind": "folder"}}).data, "val")
    matrix = ConfusionMatrix(ds.class_names)
    for image_id in ds.ids:
        loaded = [load_cam_file(f / f"{image_id}.npz", key) for f in folders]
        classes = loaded[0][0]
        fused = max_normalise(sum(maps for _, maps in loaded))
        matrix.add(confusion_matrix(ds.load_mask(image_id), to_labels(fused, classes, bg), ds.num_classes + 1))
    return 100 * matrix.summary()["miou"]


def table_ensemble(out: Path, data_root: Path, seeds: list[int], k: int, recipe: str = "new") -> str:
    lines = [f"| network | maps | ensembles of {k} seeds (each {k}-subset of {','.join(map(str, seeds))}) "
             "| mean ± std (range) |", "|---|---|---|---|"]
    for net, (key, _) in DEFAULTS.items():
        vals = [ensemble_miou(out, data_root, [f"{recipe}/{net}/s{s}" for s in subset], key, 1.0)
                for subset in itertools.combinations(seeds, k)]
        lines.append(f"| {NETWORK_NAMES[net]} | {MAP_NAMES[key]} x1.0 | {cells(vals)} | {stats(vals)} |")
    return "\n".join(lines)


def table_zero_maps(out: Path, seeds: list[int], recipe: str = "new") -> str:
    """``msrc_zero_maps.py``'s results: all-zero maps of tagged classes on val and the stand-ins' mIoU."""
    lines = ["| network | seed | val images with a zero map: CAM / IS-CAM / AE-IS-CAM (classes) | map as is | with the "
             "fallback | every tagged class -> its CAM | every tagged class -> its pre-ReLU CAM |", "|---|---|---|---|---|---|---|"]
    for net in DEFAULTS:
        for seed in seeds:
            doc = read_json(out / "evals" / f"{recipe}/{net}/s{seed}" / "zero_maps.json")
            if doc is None:
                continue
            zero = doc["zero_maps"]
            counts = " / ".join(str(zero[k]["images"]) if k in zero else "-" for k in ("cam", "iscam", "aeiscam"))
            classes = sorted({c for k in zero for c in zero[k]["classes"]})
            judged = doc["stand_ins"]
            row = [_f(None if judged[n]["miou"] is None else 100 * judged[n]["miou"]) if n in judged else "-"
                   for n in ("map", "fallback", "cam", "prerelu")]
            lines.append(f"| {NETWORK_NAMES[net]} ({MAP_NAMES[doc['map']]} x{doc['background_scale']:g}) | {seed} | "
                         f"{counts} ({', '.join(classes) or 'none'}) | " + " | ".join(row) + " |")
    return "\n".join(lines)
