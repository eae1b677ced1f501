"""Does PAMR refinement of the final maps help, and can the test-time scales share one refinement?

For trained stage-1 runs (e.g. the three seeds of benchmarks/msrc_table2.py's AE-SIPE row), make the val
CAMs three ways -- ``cam.pamr=off`` (make-cam as the paper), ``per_scale`` (each scale's maps refined, what
the exported pseudo-labeller did in aesipe 0.1) and ``fused`` (the maps summed over scales, refined once) --
and judge them with eval-cam at several background scales. Each (run, mode) gets its own run directory
under OUT (config copied, the stage-1 checkpoint linked), so nothing of the source runs changes.

    python benchmarks/msrc_cam_pamr.py OUT RUN [RUN ...] [--modes off,per_scale,fused] [--scales 0.8,1.0]

Prints a table of val mIoU (mean +- std over the runs) per mode and background scale, and make-cam seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def prepare(source: Path, target: Path) -> None:
    (target / "stage1").mkdir(parents=True, exist_ok=True)
    link = target / "stage1" / "final.pt"
    if not link.exists():
        link.symlink_to((source / "stage1" / "final.pt").resolve())
    if not (target / "config.toml").exists():
        (target / "config.toml").write_text((source / "config.toml").read_text())


def run(cmd: list[str], log) -> float:
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    log.write(f"$ {' '.join(cmd)}\n{result.stdout[-2000:]}{result.stderr[-2000:]}\n")
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--modes", default="off,per_scale,fused")
    parser.add_argument("--scales", default="0.8,1.0")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    modes, scales = args.modes.split(","), args.scales
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, float], list[float]] = {}
    seconds: dict[str, list[float]] = {}
    with open(args.out / "log.txt", "a") as log:
        for source in args.runs:
            for mode in modes:
                target = args.out / f"{source.name}-{mode}"
                prepare(source, target)
                done = target / f"eval_{args.split}.json"
                if not done.exists():
                    print(f"[{time.strftime('%H:%M:%S')}] {target.name}: make-cam (load {_load()})", flush=True)
                    seconds.setdefault(mode, []).append(run(
                        [str(BIN / "aesipe-train"), "make-cam", str(target), "--split", args.split, f"cam.pamr={mode}"],
                        log))
                    run([str(BIN / "aesipe-train"), "eval-cam", str(target), "--split", args.split,
                         "--sweep", scales], log)
                    (target / "cam_eval.json").rename(done)
                data = json.loads(done.read_text())
                for row in data["sweep"]:
                    results.setdefault((mode, row["background_scale"]), []).append(100 * row["miou"])
    print(f"\nval mIoU (%) of the selected maps, {len(args.runs)} runs, load now {_load()}")
    print("| cam.pamr | " + " | ".join(f"bg x{s}" for s in scales.split(",")) + " | make-cam s (this run) |")
    print("|---|" + "---|" * (len(scales.split(",")) + 1))
    for mode in modes:
        cells = []
        for scale in (float(s) for s in scales.split(",")):
            values = results.get((mode, scale), [])
            spread = f" +- {statistics.stdev(values):.1f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.1f}{spread}" if values else "-")
        timing = f"{statistics.mean(seconds[mode]):.0f}" if seconds.get(mode) else "(cached)"
        print(f"| {mode} | " + " | ".join(cells) + f" | {timing} |")


if __name__ == "__main__":
    main()
