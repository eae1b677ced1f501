"""Benchmark PAMR: reference (pure PyTorch) vs the fused op, time and peak extra memory.

    python benchmarks/bench_pamr.py [--device cpu|cuda] [--repeats N] [--write [--results FILE]] [--smoke]

Cases: 1 x 21 x 321 x 321 (mask 41 x 41) and 16 x 21 x 128 x 128 (mask 16 x 16), 10 iterations,
dilations (1, 2, 4, 8, 12, 24), float32, through the public ``aesipe.pamr`` (mask resize included) under
``torch.inference_mode``. Each (case, backend) runs in a fresh process so that memory the allocator
kept from an earlier run cannot hide a later run's peak:

* CPU peak extra memory = peak RSS during the first call minus RSS just before it (the peak is reset
  through /proc/self/clear_refs; without it, the process's ru_maxrss is used, which is the same for a
  fresh process whose set-up allocates less than the call);
* CUDA peak extra memory = torch.cuda.max_memory_allocated() minus the allocation before the call.

Time = median of ``--repeats`` calls after that first (warm-up) call. The worker processes also save
their outputs, and the table reports the largest |fused - reference| difference as a sanity check.
``--write`` replaces this device's table in the "## PAMR operator" section of benchmarks/RESULTS.md (or of
``--results FILE``, e.g. a copy that benchmarks/gpu_check.sh brings back). ``--smoke`` runs one tiny case only:
a check that the script runs (gpu_check.sh without a GPU), not a figure.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## PAMR operator"
DILATIONS = (1, 2, 4, 8, 12, 24)
NUM_ITER = 10
# name -> (batch, classes, height, width, mask height, mask width)
CASES = {
    "1x21x321x321, mask 41x41": (1, 21, 321, 321, 41, 41),
    "16x21x128x128, mask 16x16": (16, 21, 128, 128, 16, 16),
}
SMOKE_CASES = {"1x21x32x32, mask 8x8 (smoke test, not a figure)": (1, 21, 32, 32, 8, 8)}
BACKENDS = ("reference", "fused")


# ----------------------------------------------------------------------------- worker (one process per run)


def _status_mib(field: str) -> float:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) / 1024


def _cpu_peak_tracker():
    """Returns (start, stop) -> peak extra RSS in MiB for the code run between them."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        base = _status_mib("VmRSS")
        return lambda: max(0.0, _status_mib("VmHWM") - base)
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        return lambda: max(0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)


def worker(case: str, backend: str, device: str, repeats: int, out_path: str) -> dict:
    import statistics
    import time

    import torch

    sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
    from aesipe.ops import pamr, pamr_backend_for

    if backend == "fused" and pamr_backend_for(device) != "fused":
        raise SystemExit(f"the fused op is unavailable on {device}")
    batch, classes, height, width, mask_h, mask_w = {**CASES, **SMOKE_CASES}[case]
    gen = torch.Generator().manual_seed(0)
    image = (torch.rand(batch, 3, height, width, generator=gen) * 255).to(device)
    mask = torch.rand(batch, classes, mask_h, mask_w, generator=gen).to(device)

    def call():
        out = pamr(image, mask, num_iter=NUM_ITER, dilations=DILATIONS, backend=backend)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    with torch.inference_mode():
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            out = call()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        else:
            stop = _cpu_peak_tracker()
            out = call()
            peak = stop()
        torch.save(out.cpu(), out_path)
        del out
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "peak_mib": peak, "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- driver


def run_case(case: str, backend: str, device: str, repeats: int, out_path: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, backend, device, str(repeats), out_path]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{case} / {backend} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine(device: str, load_before: float) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE).group(1)
    except (OSError, AttributeError):
        pass
    parts = [f"{cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads)"]
    if device == "cuda":
        parts.append(torch.cuda.get_device_name())
    # The 1-minute load average before and after: other processes on a shared machine slow the runs.
    parts += [f"Python {platform.python_version()}", f"torch {torch.__version__}",
              f"load average {load_before:.1f} before / {_load():.1f} after the run", datetime.date.today().isoformat()]
    return ", ".join(parts)


def benchmark(device: str, repeats: int, cases: dict) -> str:
    import torch

    lines = [
        f"| case ({device}) | backend | median time (s) | peak extra memory (MiB) | fused speed-up | "
        "fused / reference memory | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            rows, outputs = {}, {}
            for backend in BACKENDS:
                outputs[backend] = str(Path(tmp) / f"{backend}.pt")
                rows[backend] = run_case(case, backend, device, repeats if backend == "fused" else max(1, repeats // 3),
                                         outputs[backend])
                print(f"{case:28s} {backend:9s} {rows[backend]['seconds']:8.3f} s  "
                      f"{rows[backend]['peak_mib']:8.1f} MiB", flush=True)
            diff = (torch.load(outputs["fused"]) - torch.load(outputs["reference"])).abs().max().item()
            ref, fused = rows["reference"], rows["fused"]
            speedup = ref["seconds"] / fused["seconds"]
            share = fused["peak_mib"] / ref["peak_mib"] if ref["peak_mib"] else float("nan")
            lines.append(f"| {case} | reference | {ref['seconds']:.3f} | {ref['peak_mib']:.0f} | | | |")
            lines.append(f"| {case} | fused | {fused['seconds']:.3f} | {fused['peak_mib']:.0f} | "
                         f"{speedup:.1f}x | 1/{1 / share:.0f} | {diff:.1e} |")
    return "\n".join(lines)


def write_results(device: str, table: str, repeats: int, load_before: float, results: Path = RESULTS) -> None:
    """Replace this device's block inside the PAMR section of ``results``; keep everything else."""
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    header = (
        f"{SECTION}\n\n"
        "`python benchmarks/bench_pamr.py --device cpu|cuda --write`: public `aesipe.pamr` (mask resize included),\n"
        f"{NUM_ITER} iterations, dilations {DILATIONS}, float32, inference mode; each (case, backend) in a fresh\n"
        "process; time = median of N calls after one warm-up call (fused N = --repeats, reference N = --repeats/3);\n"
        "peak extra memory = peak RSS (CPU) or peak CUDA allocation during the first call minus the amount just\n"
        "before it. Targets: fused >= 10x faster and <= 1/10 of the reference's peak extra memory.\n"
    )
    start = text.find(SECTION)
    if start < 0:
        section = header
        text = text.rstrip("\n") + "\n\n"
        start = end = len(text)
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        end = len(text) if nxt < 0 else nxt + 1
        section = text[start:end]
    block = f"### {device.upper()}\n\nMachine: {machine(device, load_before)}; fused repeats {repeats}.\n\n{table}\n"
    marker = f"### {device.upper()}\n"
    if marker in section:
        b_start = section.index(marker)
        b_next = section.find("\n### ", b_start + len(marker))
        b_end = len(section) if b_next < 0 else b_next + 1
        rest = section[b_end:]
        section = section[:b_start] + block + ("\n" + rest if rest else "")
    else:
        section = section.rstrip("\n") + "\n\n" + block
    if "### CUDA" not in section:
        section += (
            "\n### CUDA\n\nNot measured: no GPU has been lent to this project yet. On a GPU machine `OUT=dir "
            "benchmarks/gpu_check.sh` measures it\n(with the labelling and mixed-precision stage-1 tables) into "
            "`dir/RESULTS.md`; or run\n`python benchmarks/bench_pamr.py --device cuda --write`.\n"
        )
    results.write_text(text[:start] + section.rstrip("\n") + "\n" + ("\n" + text[end:] if text[end:] else ""))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        case, backend, device, repeats, out_path = sys.argv[2:7]
        print(json.dumps(worker(case, backend, device, int(repeats), out_path)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls of the fused op (reference: a third)")
    parser.add_argument("--write", action="store_true", help=f"update the '{SECTION}' section of {RESULTS.name}")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the file --write updates (default: %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="one tiny case: checks that the script runs")
    args = parser.parse_args()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA GPU is visible")
    load_before = _load()
    table = benchmark(args.device, args.repeats, SMOKE_CASES if args.smoke else CASES)
    print("\n" + table)
    if args.write:
        write_results(args.device, table, args.repeats, load_before, args.results)
        print(f"\nwrote the {args.device.upper()} table into {args.results}")


if __name__ == "__main__":
    main()
