"""Every synthetic-data benchmark in one command (``make bench``): each prints its own table.

    python benchmarks/run_all.py [--only pamr,pamr_onnx,random_walk,label,eager_inference] [--full]

By default each benchmark runs at a size that finishes in a few minutes on 2 CPU cores; ``--full`` runs the
sizes recorded in benchmarks/RESULTS.md. The load average is printed before and after each one: on a shared
machine, compare contenders within one table (they run in the same invocation), not across runs. The
benchmarks on real photos (msrc_stage1.sh, msrc_table2.py, msrc_cam_pamr.py) need the MSRC-21 data and
ImageNet weights and take hours: they are run by hand, with the commands given in RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (arguments for the quick run, arguments for the full run)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "pamr": (["bench_pamr.py", "--device", "cpu", "--repeats", "3"], ["bench_pamr.py", "--device", "cpu"]),
    "pamr_onnx": (["bench_pamr_onnx.py", "--quick"], ["bench_pamr_onnx.py"]),
    "random_walk": (["bench_random_walk.py", "--dense-max-pixels", "1024"], ["bench_random_walk.py"]),
    "label": (["bench_label.py", "--images", "12", "--ray-actors", ""], ["bench_label.py", "--images", "48"]),
    "eager_inference": (["bench_eager_inference.py", "--images", "3"], ["bench_eager_inference.py", "--images", "12"]),
}


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    parser.add_argument("--full", action="store_true", help="the sizes recorded in RESULTS.md (much longer)")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (choose from {', '.join(BENCHMARKS)})")
    failed = []
    for name in chosen:
        argv = BENCHMARKS[name][1 if args.full else 0]
        print(f"\n=== {name}: python benchmarks/{' '.join(argv)}   (load before: {load_average()})", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / argv[0]), *argv[1:]])
        print(f"=== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.perf_counter() - started:.0f} s"
              f"   (load after: {load_average()})", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
