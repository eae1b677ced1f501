#!/usr/bin/env python3
"""aesipe-label on folders of N tiny images: does the work stay linear in the folder?

    python benchmarks/bench_scale.py [--sizes 10000,100000,300000] [--work /tmp/aesipe-scale] [--keep]

For each N: a folder of N tiny JPEGs (16 x 16, in sub-folders of 1,000) is labelled with the committed tiny
segmenter (``tests/fixtures/tiny_segmenter.onnx``), then labelled again three ways. Each run is a fresh process
(``label_folder`` with its defaults; no progress bar); the table gives

- first run: wall time, throughput over its first and last 10 % of images (decay shows as a falling rate),
  peak RSS and its growth per image over an empty run's;
- no-op re-run: nothing changed, every mask kept;
- one new image: the same folder plus one image;
- the report's size.

Targets (the "folders of a million images" issue): each re-run <= 10 % of the first run's time, peak RSS growing
by <= ~1 KB per image, no throughput decay. Run it on a quiet machine and record ``uptime`` with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "tests" / "fixtures" / "tiny_segmenter.onnx"
PER_FOLDER = 1000

_CHILD = r"""
import json, resource, sys, time
from aesipe.infer import label_folder
from aesipe.infer.report import Report

stamps = []
real_set = Report.set
def set_and_stamp(self, rel, record):
    stamps.append(time.perf_counter())
    real_set(self, rel, record)
Report.set = set_and_stamp

model, images, out = sys.argv[1:4]
started = time.perf_counter()
report = label_folder(model, images, out, progress=False, log=lambda line: None)
wall = time.perf_counter() - started
summary = report.summary
rate = {}
if len(stamps) >= 20:
    tenth = len(stamps) // 10
    rate = {"first_10pct_per_s": tenth / (stamps[tenth] - stamps[0]),
            "last_10pct_per_s": tenth / (stamps[-1] - stamps[-1 - tenth])}
print(json.dumps({"wall_s": wall, "processed": summary["processed_this_run"], "resumed": summary["resumed"],
                  "ok": report.ok, "failed": report.failed, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  **rate}))
"""


def make_folder(root: Path, count: int) -> Path:
    """``count`` tiny JPEGs (kept across runs of the benchmark: only the missing ones are written)."""
    rng = np.random.default_rng(0)
    tiles = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(64)]
    for i in range(count):
        path = root / f"{i // PER_FOLDER:04d}" / f"img{i:07d}.jpg"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tiles[i % len(tiles)].save(path, quality=80)
    return root


def run(images: Path, out: Path) -> dict:
    child = subprocess.run([sys.executable, "-c", _CHILD, str(MODEL), str(images), str(out)], capture_output=True,
                           text=True)
    if child.returncode not in (0, 1):
        raise SystemExit(f"labelling failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,300000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/aesipe-scale"))
    parser.add_argument("--keep", action="store_true", help="keep the image folders (outputs are always removed)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"load before: {load()}", flush=True)
    baseline = run(make_folder(args.work / "images_1", 1), args.work / "out_1")["peak_rss_mb"]
    shutil.rmtree(args.work / "out_1")
    rows = []
    for count in sizes:
        images, out = make_folder(args.work / f"images_{count}", count), args.work / f"out_{count}"
        shutil.rmtree(out, ignore_errors=True)
        first = run(images, out)
        noop = run(images, out)
        extra = images / "new" / "extra.jpg"
        extra.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(extra)
        one_new = run(images, out)
        extra.unlink()
        extra.parent.rmdir()
        report_mb = (out / "report.json").stat().st_size / 1e6
        rows.append((count, first, noop, one_new, report_mb))
        print(f"N={count}: first {first['wall_s']:.1f} s, no-op {noop['wall_s']:.1f} s, one new {one_new['wall_s']:.1f} s "
              f"(load {load()})", flush=True)
        shutil.rmtree(out)
        if not args.keep:
            shutil.rmtree(images)
    print(f"\nload after: {load()}; an empty run's peak RSS {baseline:.0f} MB\n")
    print("| N | first run | rate first / last 10 % (img/s) | peak RSS (MB), growth per image | no-op re-run | one new image | report |")
    print("|---|---|---|---|---|---|---|")
    for count, first, noop, one_new, report_mb in rows:
        growth = (first["peak_rss_mb"] - baseline) * 1024 / count
        print(f"| {count:,} | {first['wall_s']:.1f} s | {first.get('first_10pct_per_s', 0):.0f} / "
              f"{first.get('last_10pct_per_s', 0):.0f} | {first['peak_rss_mb']:.0f}, {growth:.2f} KB | "
              f"{noop['wall_s']:.1f} s ({100 * noop['wall_s'] / first['wall_s']:.1f} %) | "
              f"{one_new['wall_s']:.1f} s ({100 * one_new['wall_s'] / first['wall_s']:.1f} %) | {report_mb:.1f} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
