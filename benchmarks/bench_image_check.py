"""What checking a training set before step 1 costs per image (``aesipe.data.imagecheck``).

    python benchmarks/bench_image_check.py [--folder DIR] [--repeats 3] [--large 6]

Per image, one thread, files in the page cache (each contender reads every file once before timing; the
three alternate within each repeat, and full/check is the median of the repeats' ratios):
header only (``Image.open``: what would pass a truncated file), the check (``aesipe.imaging.verify_image``:
JPEGs in draft mode at 1/8, other formats as the training read), and the training read itself
(``read_rgb``: full size, RGB). Then the whole set through ``find_unreadable`` on the threads it uses:
cold (no cache) and warm (the cache of the cold run: a stat per file). ``--folder`` defaults to MSRC-21's
JPEGImages beside the checkout; ``--large N`` adds N synthetic 12 Mpx camera-sized JPEGs, where draft mode
saves the most.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from aesipe.constants import IMAGE_SUFFIXES
from aesipe.data.imagecheck import find_unreadable
from aesipe.imaging import read_rgb, verify_image

MSRC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "msrc21-voc" / "JPEGImages"


def _header(path: Path) -> None:
    with Image.open(path) as image:
        image.size  # noqa: B018


def _per_image_ms(fns, paths: list[Path], repeats: int) -> tuple[list[float], float]:
    """Median ms per image of each of ``fns``, and the median over repeats of the last's time / the middle's.
    The contenders alternate within each repeat, so a busy moment of a shared machine hits them alike."""
    for fn in fns:
        for path in paths:  # warm the page cache and the code paths
            fn(path)
    runs: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for times, fn in zip(runs, fns):
            start = time.perf_counter()
            for path in paths:
                fn(path)
            times.append((time.perf_counter() - start) / len(paths) * 1000)
    ratio = statistics.median(full / check for full, check in zip(runs[-1], runs[-2]))
    return [statistics.median(times) for times in runs], ratio


def _large_jpegs(folder: Path, count: int) -> list[Path]:
    y, x = np.mgrid[0:3000, 0:4000]
    paths = []
    for index in range(count):
        rgb = np.stack([(x // (7 + index)) % 256, (y // 5) % 256, ((x + y) // 9) % 256], -1).astype(np.uint8)
        path = folder / f"large_{index}.jpg"
        Image.fromarray(rgb).save(path, quality=90)
        paths.append(path)
    return paths


def _row(name: str, paths: list[Path], repeats: int, workers: int) -> str:
    (header, check, full), ratio = _per_image_ms((_header, verify_image, read_rgb), paths, repeats)
    with tempfile.TemporaryDirectory() as cache:
        images = {str(i): p for i, p in enumerate(paths)}
        start = time.perf_counter()
        assert not find_unreadable(images, Path(cache), workers)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        assert not find_unreadable(images, Path(cache), workers)
        warm = time.perf_counter() - start
    sizes = {Image.open(p).size for p in paths}
    shape = f"{min(sizes)[0]}x{min(sizes)[1]}" + (f"..{max(sizes)[0]}x{max(sizes)[1]}" if len(sizes) > 1 else "")
    return (f"| {name} | {len(paths)} | {shape} | {header:.2f} | {check:.2f} | {full:.2f} | {ratio:.1f}x | "
            f"{cold:.2f} | {warm * 1000:.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=MSRC)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", type=int, default=6, help="synthetic 4000x3000 JPEGs to add as a second row")
    parser.add_argument("--workers", type=int, default=min(4, len(os.sched_getaffinity(0))))
    args = parser.parse_args()
    print(f"load average before: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| images | files | size (WxH) | header ms/img | check ms/img | full read ms/img | full/check | "
          f"set, cold s ({args.workers} threads) | set, cached ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    if args.folder.is_dir():
        paths = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        print(_row(str(args.folder.name if args.folder != MSRC else "MSRC-21 JPEGImages"), paths, args.repeats,
                   args.workers))
    else:
        print(f"({args.folder} is absent: skipped)", file=sys.stderr)
    if args.large:
        with tempfile.TemporaryDirectory() as folder:
            print(_row("synthetic 12 Mpx JPEG, q90", _large_jpegs(Path(folder), args.large), args.repeats,
                       args.workers))
    print(f"load average after: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
