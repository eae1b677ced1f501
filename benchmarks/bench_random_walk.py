"""Random walk (make-seg-labels): time and peak memory of the dense reference vs the linear-memory forms.

    .venv/bin/python benchmarks/bench_random_walk.py [--threads N] [--dense-max-pixels 4096]

Each measurement runs in a fresh subprocess, so ``ru_maxrss`` is that run's peak resident memory
(the Python + torch baseline is measured too and subtracted); time excludes a warm-up call on an
8 x 8 map (the first sparse product loads its kernels, ~4 s once per process). Maps are stride-4 sizes
(a 500 x 375 VOC image gives 125 x 94), 3 maps (background + 2 classes), the recipe's radius 5,
beta 10, exp_times 8. Dense runs only up to ``--dense-max-pixels``; above that, its memory is the
size of its matrices ((HW)^2 float32, three alive while squaring) and its time is not measured.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

SIZES = [(32, 32), (48, 64), (64, 64), (125, 94), (128, 128), (256, 256)]


def _measure(method: str, height: int, width: int, threads: int) -> dict:
    import torch

    from aesipe.train.propagation import propagate, propagate_dense

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(3, height, width, generator=gen)
    edge = torch.rand(height, width, generator=gen) ** 3
    if method in ("sparse", "window"):  # one-time library start-up (sparse kernels load lazily) not timed
        propagate(maps[:, :8, :8], edge[:8, :8], exp_times=1, method=method)
    start = time.perf_counter()
    if method == "baseline":
        out = maps
    elif method == "dense":
        out = propagate_dense(maps, edge)
    else:
        out = propagate(maps, edge, method=method)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    checksum = out.double().sum().item()
    labels = out.argmax(0).flatten().tolist() if height * width <= 4096 else None
    return {"seconds": seconds, "peak_mb": peak_kb / 1024, "checksum": checksum, "labels": labels}


def _run_one(method: str, height: int, width: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--one", method, str(height), str(width), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dense-max-pixels", type=int, default=4096)
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "H", "W"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, height, width = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(_measure(method, height, width, args.threads)))
        return

    import torch

    base = _run_one("baseline", 8, 8, args.threads)["peak_mb"]
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} cores visible, "
          f"torch {torch.__version__}, {args.threads} threads; baseline process {base:.0f} MB")
    header = f"{'map (HxW)':>10} {'pixels':>7} | {'dense s':>8} {'dense MB':>9} | {'sparse s':>8} {'sparse MB':>9} " \
             f"| {'window s':>8} {'window MB':>9} | labels equal"
    print(header)
    print("-" * len(header))
    for height, width in SIZES:
        pixels = height * width
        rows = {m: _run_one(m, height, width, args.threads) for m in ("sparse", "window")}
        if pixels <= args.dense_max_pixels:
            rows["dense"] = _run_one("dense", height, width, args.threads)
            dense_s, dense_mb = f"{rows['dense']['seconds']:8.2f}", f"{rows['dense']['peak_mb'] - base:9.0f}"
            same = rows["dense"]["labels"] == rows["sparse"]["labels"] == rows["window"]["labels"]
            equal = "yes" if same else "NO"
        else:
            dense_s, dense_mb, equal = "       -", f"{3 * pixels**2 * 4 / 2**20:>8.0f}*", "-"
        print(f"{height:>4}x{width:<5} {pixels:>7} | {dense_s} {dense_mb} | "
              f"{rows['sparse']['seconds']:8.2f} {rows['sparse']['peak_mb'] - base:9.0f} | "
              f"{rows['window']['seconds']:8.2f} {rows['window']['peak_mb'] - base:9.0f} | {equal}")
    print("* not run: three (HW)^2 float32 matrices alive while squaring")


if __name__ == "__main__":
    main()
