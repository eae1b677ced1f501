"""Benchmark standard-op PAMR formulations inside ONNX Runtime against the fused op and the reference.

    python benchmarks/bench_pamr_onnx.py [--quick] [--candidates a,b] [--shapes BxKxHxW,...]
                                         [--threads 2,1] [--repeats N] [--keep DIR]

For each candidate formulation of same-size PAMR (10 iterations, dilations (1, 2, 4, 8, 12, 24) unless
told otherwise) a small module calling it is exported the way ``export/onnx.py`` does it
(``torch.onnx.export(..., dynamo=True, opset_version=20, optimize=True)``, dynamic batch, classes,
height and width, example input 1 x 21 x 40 x 36), each export in a fresh process so that its time is
that of a cold export. The table then gives, per candidate:

* export time (s) and node count (every node, those inside Loop/Scan/If bodies included);
* per shape and intra-op thread count: median wall time and median process CPU time of
  ``InferenceSession.run`` (CPU provider, default session options, i.e. ORT_ENABLE_ALL) over ``--repeats``
  runs after one warm-up run; the fused op (``aesipe.ops.pamr(..., backend="fused")``) and the eager
  reference (``pamr_reference``, fewer runs) are timed in the same rounds with ``torch.set_num_threads``;
* the largest |candidate - reference| at that shape, and the time relative to the fused op.

Every contender is timed once per round, round-robin, so that a load spike on a shared machine hits them
all alike; CPU time is printed next to wall time because it is far less sensitive to other processes.
The 1-minute load average is printed before and after. ``--keep DIR`` keeps the exported files and
reuses them (and their recorded export time) on the next run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from aesipe.ops.pamr_decomposed import affinity as conv_affinity  # noqa: E402  (the exported form's affinity)
from aesipe.ops.pamr_reference import EPS, RING_OFFSETS, STD_SCALE, pamr_reference  # noqa: E402

DILATIONS = (1, 2, 4, 8, 12, 24)
NUM_ITER = 10
EXAMPLE = (1, 21, 40, 36)  # export example: B x K x H x W (no 0/1 sizes, which torch.export specialises)
SHAPES = ((1, 21, 321, 321), (1, 17, 53, 80), (4, 21, 93, 125))
QUICK_SHAPES = ((1, 17, 53, 80),)


# ----------------------------------------------------------------------------- candidate formulations
# Every candidate shares the contract of pamr_reference on same-size inputs (float32 here).


def _offsets(dilations):
    return [(dy * d, dx * d) for d in dilations for dy, dx in RING_OFFSETS]


def _tap(padded, oy, ox, pad):
    """Static slice of a map padded by ``pad`` on each side: value at p is x(p + (oy, ox)).

    The ends are negative constants (or None), so the exported Slice needs no Shape arithmetic."""
    return padded[..., pad + oy:(oy - pad) or None, pad + ox:(ox - pad) or None]


def _slices_step(mask, aff, dilations):
    pad = max(dilations)
    padded = F.pad(mask, (pad,) * 4, mode="replicate")  # once per iteration, by the largest dilation
    total = None
    for j, (oy, ox) in enumerate(_offsets(dilations)):
        term = _tap(padded, oy, ox, pad) * aff[:, j:j + 1]
        total = term if total is None else total + term
    return total


def prop_slices(mask, aff, dilations, num_iter):
    """Sum over the P neighbours of weight * shifted mask, shifts = static Slices of one padded map."""
    for _ in range(num_iter):
        mask = _slices_step(mask, aff, dilations)
    return mask


def _scan(body, init, xs):
    """torch's scan (exported as an ONNX Scan) while tracing; the same body in a Python loop eagerly."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        from torch._higher_order_ops import scan

        return scan(body, init, xs)
    carry, outs = init, []
    for i in range(xs.shape[0]):
        carry, out = body(carry, xs[i])
        outs.append(out)
    return carry, torch.stack(outs)


def prop_slices_loop(mask, aff, dilations, num_iter):
    """prop_slices with the iterations in one ONNX Scan: one copy of the step in the file."""
    def body(m, x):
        return _slices_step(m, aff, dilations), x.clone()

    return _scan(body, mask, torch.zeros(num_iter, device=mask.device))[0]


def prop_slices_cl(mask, aff, dilations, num_iter):
    """prop_slices_loop in channels-last layout [B, H, W, K] (weights broadcast along the innermost axis)."""
    pad = max(dilations)
    weights = aff.permute(0, 2, 3, 1).unsqueeze(-1)  # [B, H, W, P, 1]

    def body(m, x):
        padded = F.pad(m.permute(0, 3, 1, 2), (pad,) * 4, mode="replicate").permute(0, 2, 3, 1)
        total = None
        for j, (oy, ox) in enumerate(_offsets(dilations)):
            term = padded[:, pad + oy:(oy - pad) or None, pad + ox:(ox - pad) or None] * weights[:, :, :, j]
            total = term if total is None else total + term
        return total, x.clone()

    out = _scan(body, mask.permute(0, 2, 3, 1).contiguous(), torch.zeros(num_iter, device=mask.device))[0]
    return out.permute(0, 3, 1, 2)


def prop_slices_fp16(mask, aff, dilations, num_iter):
    """prop_slices_loop computed in float16 (half the bytes moved)."""
    return prop_slices_loop(mask.half(), aff.half(), dilations, num_iter).float()


def prop_gather(mask, aff, dilations, num_iter):
    """Precomputed flat index table + one Gather per iteration -> [B, K, P, H, W], weighted ReduceSum."""
    batch, classes, height, width = mask.shape
    pad = max(dilations)
    ys = torch.arange(height, device=mask.device).view(1, -1, 1)
    xs = torch.arange(width, device=mask.device).view(1, 1, -1)
    oy = torch.tensor([o[0] for o in _offsets(dilations)], device=mask.device).view(-1, 1, 1)
    ox = torch.tensor([o[1] for o in _offsets(dilations)], device=mask.device).view(-1, 1, 1)
    index = ((ys + pad + oy) * (width + 2 * pad) + (xs + pad + ox)).reshape(-1)
    weights = aff.unsqueeze(1)
    for _ in range(num_iter):
        flat = F.pad(mask, (pad,) * 4, mode="replicate").flatten(2)
        mask = (flat.index_select(2, index).view(batch, classes, -1, height, width) * weights).sum(2)
    return mask


def prop_fold(mask, aff, dilations, num_iter):
    """Per dilation: one broadcast Mul makes the 9 weighted taps, one Col2Im (F.fold) shifts and sums them.

    The weights are pre-shifted once onto the padded block grid, so no per-neighbour Slice is needed."""
    height, width = mask.shape[-2:]
    weights = []
    for i, d in enumerate(dilations):
        taps = []
        for ky in range(3):
            for kx in range(3):
                oy, ox = (1 - ky) * d, (1 - kx) * d
                if (oy, ox) == (0, 0):
                    taps.append(torch.zeros_like(F.pad(aff[:, :1], (d,) * 4)))
                    continue
                j = 8 * i + RING_OFFSETS.index((oy // d, ox // d))
                taps.append(F.pad(aff[:, j:j + 1], (d + ox, d - ox, d + oy, d - oy)))
        weights.append(torch.cat(taps, 1).flatten(2).unsqueeze(1))  # [B, 1, 9, L]
    for _ in range(num_iter):
        total = None
        for d, w in zip(dilations, weights):
            cols = (F.pad(mask, (d,) * 4, mode="replicate").flatten(2).unsqueeze(2) * w).flatten(1, 2)
            term = F.fold(cols, (height, width), 3, dilation=d, padding=2 * d)
            total = term if total is None else total + term
        mask = total
    return mask


def _adopted():
    from aesipe.ops.pamr_decomposed import pamr_decomposed

    return pamr_decomposed


def _tiles(tile_rows):
    from pamr_scan_form import pamr_decomposed

    def run(image, mask, dilations, num_iter):
        return pamr_decomposed(image, mask, dilations, num_iter, tile_rows=tile_rows)

    return run


def _tiles_bk(tile_rows):
    """The row-tile form with maps kept as [B, K, rows, W]: row Gathers on axis 2 (B * K * T short runs
    each) and a Transpose of the stacked tiles back into rows every iteration."""
    from pamr_scan_form import _columns, _row_groups, _scan

    def run(image, mask, dilations, num_iter):
        groups = _row_groups(dilations)
        batch, classes, height, width = mask.shape
        pad, repeats = max(dilations), len(dilations)
        count = (height + tile_rows - 1) // tile_rows
        grid = torch.arange(count * tile_rows).view(count, tile_rows)
        sources = [(grid + dy).clamp(0, height - 1) for dy, _ in groups]
        image_wide = F.pad(image, (pad, pad, 0, 0), mode="replicate")

        def aff_tile(carry, rows):
            ring, centre = [None] * (8 * repeats), None
            for (dy, cols), source in zip(groups, rows):
                band = image_wide.index_select(2, source)
                if dy == 0:
                    centre = _columns(band, 0, pad)
                for j, dx in cols:
                    ring[j] = _columns(band, dx, pad)
            ring, centre = torch.stack(ring, dim=2), centre.unsqueeze(2)
            taps = 9 * repeats
            mean = (ring.sum(dim=2, keepdim=True) + repeats * centre) / taps
            sq = ((ring - mean) ** 2).sum(dim=2, keepdim=True) + repeats * (centre - mean) ** 2
            std = (sq / (taps - 1)).sqrt()
            logits = (-(centre - ring).abs() / (EPS + STD_SCALE * std)).mean(dim=1)
            return carry.clone(), logits.softmax(dim=1)

        aff = _scan(aff_tile, torch.zeros(()), tuple(sources))[1]  # [n, B, P, T, W]

        def iteration(current, step):
            wide = F.pad(current, (pad, pad, 0, 0), mode="replicate")

            def tile(carry, xs):
                *rows, a = xs
                weights, total = a.split(1, dim=1), None
                for (_, cols), source in zip(groups, rows):
                    if cols:
                        band = wide.index_select(2, source)
                        for j, dx in cols:
                            term = _columns(band, dx, pad) * weights[j]
                            total = term if total is None else total + term
                return carry.clone(), total

            out = _scan(tile, torch.zeros(()), (*sources, aff))[1]
            return out.permute(1, 2, 0, 3, 4).reshape(batch, classes, count * tile_rows, width), step[0].clone()

        start = mask.index_select(2, grid.flatten().clamp(max=height - 1))
        out = _scan(iteration, start, (torch.zeros(num_iter),))[0]
        return out.index_select(2, torch.arange(height))

    return run


def _affinity_conv(image, mask, dilations, num_iter):
    return mask * conv_affinity(image, dilations).mean(1, keepdim=True)


def _affinity_tiled(image, mask, dilations, num_iter):
    import pamr_scan_form as dec

    groups = dec._row_groups(dilations)
    height = mask.shape[2]
    count = (height + dec.TILE_ROWS - 1) // dec.TILE_ROWS
    grid = torch.arange(count * dec.TILE_ROWS).view(count, dec.TILE_ROWS)
    sources = [(grid + dy).clamp(0, height - 1) for dy, _ in groups]
    tiles = dec._affinity_tiles(image, dilations, groups, sources)  # [n, T, B, P, W]
    aff = tiles.flatten(0, 1).index_select(0, torch.arange(height)).permute(1, 2, 0, 3)
    return mask * aff.mean(1, keepdim=True)


def _with_affinity(prop):
    def run(image, mask, dilations, num_iter):
        return prop(mask, conv_affinity(image, dilations), dilations, num_iter)

    return run


CANDIDATES = {
    "slices": ("static Slices of one padded map, iterations unrolled", lambda: _with_affinity(prop_slices)),
    "slices_loop": ("static Slices, iterations in an ONNX Scan", lambda: _with_affinity(prop_slices_loop)),
    "slices_cl": ("static Slices, channels-last, iterations in a Scan", lambda: _with_affinity(prop_slices_cl)),
    "slices_fp16": ("static Slices in float16, iterations in a Scan", lambda: _with_affinity(prop_slices_fp16)),
    "gather": ("index table + Gather [B,K,P,H,W] + ReduceSum", lambda: _with_affinity(prop_gather)),
    "fold": ("broadcast Mul + Col2Im per dilation", lambda: _with_affinity(prop_fold)),
    "tiles2": ("row tiles in nested Scans (pamr_scan_form.py), 2-row tiles", lambda: _tiles(2)),
    "tiles3": ("row tiles in nested Scans, 3-row tiles", lambda: _tiles(3)),
    "tiles4": ("row tiles in nested Scans, 4-row tiles (the fastest)", lambda: _tiles(4)),
    "tiles8": ("row tiles in nested Scans, 8-row tiles", lambda: _tiles(8)),
    "tiles16": ("row tiles in nested Scans, 16-row tiles", lambda: _tiles(16)),
    "tiles4_bk": ("row tiles with [B, K, rows, W] maps", lambda: _tiles_bk(4)),
    "affinity_conv": ("the affinity alone, conv form (times its share)", lambda: _affinity_conv),
    "affinity_tiled": ("the affinity alone, row tiles", lambda: _affinity_tiled),
    "adopted": ("aesipe.ops.pamr_decomposed as exported (one-hot convolutions)", _adopted),
}
QUICK_CANDIDATES = ("adopted", "slices_loop", "tiles4")


class _Module(torch.nn.Module):
    def __init__(self, fn, dilations, num_iter):
        super().__init__()
        self.fn, self.dilations, self.num_iter = fn, dilations, num_iter

    def forward(self, image, mask):
        return self.fn(image, mask, self.dilations, self.num_iter)


# ----------------------------------------------------------------------------- export (one process each)


def count_nodes(graph) -> int:
    """Nodes of an ONNX graph, including those of every subgraph (Loop/Scan/If bodies)."""
    import onnx

    total = 0
    for node in graph.node:
        total += 1
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                total += count_nodes(attr.g)
            for sub in attr.graphs:
                total += count_nodes(sub)
    return total


def export_worker(name: str, path: str, dilations, num_iter: int) -> dict:
    import warnings

    import onnx

    fn = CANDIDATES[name][1]()
    batch, classes, height, width = EXAMPLE
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, height, width, generator=gen) * 255
    mask = torch.rand(batch, classes, height, width, generator=gen)
    dim = torch.export.Dim
    b = dim("batch", min=1, max=1024)
    dynamic = {
        "image": {0: b, 2: dim.DYNAMIC, 3: dim.DYNAMIC},
        "mask": {0: b, 1: dim.DYNAMIC, 2: dim.DYNAMIC, 3: dim.DYNAMIC},
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        program = torch.onnx.export(
            _Module(fn, dilations, num_iter).eval(), (image, mask), dynamo=True, dynamic_shapes=dynamic,
            opset_version=20, optimize=True, verbose=False,
        )
        program.save(path)
        seconds = time.perf_counter() - start
    model = onnx.load(path)
    domains = sorted({node.domain or "ai.onnx" for node in model.graph.node})
    return {"export_s": seconds, "nodes": count_nodes(model.graph), "top_nodes": len(model.graph.node),
            "domains": domains, "functions": len(model.functions)}


def export_all(names, folder: Path, dilations, num_iter: int, reuse: bool) -> dict:
    info = {}
    for name in names:
        path = folder / f"{name}.onnx"
        meta = folder / f"{name}.json"
        if reuse and path.exists() and meta.exists():
            info[name] = json.loads(meta.read_text())
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--export-worker", name, str(path),
                   ",".join(map(str, dilations)), str(num_iter)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                print(f"{name}: export failed\n{result.stderr[-3000:]}", flush=True)
                continue
            info[name] = json.loads(result.stdout.strip().splitlines()[-1])
            meta.write_text(json.dumps(info[name]))
        info[name]["path"] = str(path)
        print(f"exported {name:12s} {info[name]['export_s']:7.1f} s {info[name]['nodes']:6d} nodes "
              f"(top level {info[name]['top_nodes']}, domains {info[name]['domains']})", flush=True)
    return info


# ----------------------------------------------------------------------------- timing


def _fused():
    """The compiled op through the public API; built into /tmp with cpp_extension if _build cannot."""
    from aesipe.ops import pamr, pamr_backend_for

    if pamr_backend_for("cpu") == "fused":
        return lambda image, mask, dilations, num_iter: pamr(image, mask, num_iter, dilations, backend="fused")
    from torch.utils.cpp_extension import load

    from aesipe.ops._build import CPU_SOURCES

    root = HERE.parent / "cpp_ext"
    load(name="aesipe_pamr_bench", sources=[str(root / source) for source in CPU_SOURCES], extra_include_paths=[str(root)],
         extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"], is_python_module=False,
         build_directory=tempfile.mkdtemp(prefix="aesipe_pamr_bench_"))
    return lambda image, mask, dilations, num_iter: torch.ops.aesipe.pamr(image, mask, list(dilations), num_iter)


def _timed(call):
    wall, cpu = time.perf_counter(), time.process_time()
    out = call()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def time_shape(shape, threads, info, fused, repeats, dilations, num_iter, reference_repeats):
    import numpy as np
    import onnxruntime as ort

    batch, classes, height, width = shape
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(batch, 3, height, width, generator=gen) * 255
    mask = torch.rand(batch, classes, height, width, generator=gen)
    feeds = {"image": image.numpy(), "mask": mask.numpy()}
    torch.set_num_threads(threads)
    with torch.inference_mode():
        ref_wall, ref_cpu, expected = _timed(lambda: pamr_reference(image, mask, dilations, num_iter))
    expected = expected.numpy()
    contenders = {}
    for name, meta in info.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        session = ort.InferenceSession(meta["path"], options, providers=["CPUExecutionProvider"])
        contenders[name] = lambda s=session: s.run(None, feeds)[0]
    if fused is not None:
        def run_fused():
            with torch.inference_mode():
                return fused(image, mask, dilations, num_iter).numpy()

        contenders["fused op"] = run_fused
    samples = {name: [] for name in contenders}
    diffs = {}
    for name, call in contenders.items():  # warm-up run, also the accuracy check
        out = call()
        diffs[name] = float(np.abs(out.astype(np.float64) - expected).max())
    ref_samples = [(ref_wall, ref_cpu)]
    for round_ in range(repeats):
        for name, call in contenders.items():
            wall, cpu, _ = _timed(call)
            samples[name].append((wall, cpu))
        if round_ < reference_repeats - 1:
            with torch.inference_mode():
                wall, cpu, _ = _timed(lambda: pamr_reference(image, mask, dilations, num_iter))
            ref_samples.append((wall, cpu))
    rows = {}
    for name, values in list(samples.items()) + [("reference (eager)", ref_samples)]:
        rows[name] = {"wall": STAT(v[0] for v in values), "cpu": STAT(v[1] for v in values),
                      "diff": diffs.get(name, 0.0)}
    return rows


STAT = statistics.median


def _load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--export-worker":
        name, path, dilations, num_iter = sys.argv[2:6]
        print(json.dumps(export_worker(name, path, tuple(int(d) for d in dilations.split(",")), int(num_iter))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: candidates {','.join(QUICK_CANDIDATES)}, shape 1x17x53x80, 1 thread, 3 repeats")
    parser.add_argument("--candidates", help=f"comma-separated subset of {','.join(CANDIDATES)}")
    parser.add_argument("--shapes", help="comma-separated BxKxHxW list (default: " +
                        ",".join("x".join(map(str, s)) for s in SHAPES) + ")")
    parser.add_argument("--threads", default=None, help="comma-separated intra-op thread counts (default 2,1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per contender (default 7)")
    parser.add_argument("--reference-repeats", type=int, default=2, help="timed runs of the eager reference")
    parser.add_argument("--min", action="store_true",
                        help="report the fastest run instead of the median (less sensitive to other processes)")
    parser.add_argument("--keep", type=Path, help="keep the exported files here and reuse them on the next run")
    parser.add_argument("--num-iter", type=int, default=NUM_ITER)
    parser.add_argument("--dilations", default=",".join(map(str, DILATIONS)))
    args = parser.parse_args()

    names = args.candidates.split(",") if args.candidates else list(QUICK_CANDIDATES if args.quick else CANDIDATES)
    unknown = set(names) - set(CANDIDATES)
    if unknown:
        raise SystemExit(f"unknown candidates {sorted(unknown)}; choose from {list(CANDIDATES)}")
    shapes = ([tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")] if args.shapes
              else list(QUICK_SHAPES if args.quick else SHAPES))
    threads = [int(t) for t in (args.threads or ("1" if args.quick else "2,1")).split(",")]
    repeats = args.repeats or (3 if args.quick else 7)
    dilations = tuple(int(d) for d in args.dilations.split(","))

    global STAT
    STAT = min if args.min else statistics.median
    stat = "min" if args.min else "median"
    load_before = _load()
    print(f"load average before: {load_before:.2f} (1 min), {os.cpu_count()} CPUs", flush=True)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_pamr_onnx_"))
    folder.mkdir(parents=True, exist_ok=True)
    info = export_all(names, folder, dilations, args.num_iter, reuse=args.keep is not None)
    try:
        fused = _fused()
    except Exception as exc:  # noqa: BLE001 - report and go on without the fused column
        print(f"fused op unavailable: {exc}", flush=True)
        fused = None

    results = {}
    for shape in shapes:
        for count in threads:
            label = "x".join(map(str, shape))
            print(f"timing {label}, {count} thread(s), load {_load():.2f} ...", flush=True)
            results[(label, count)] = time_shape(shape, count, info, fused, repeats, dilations, args.num_iter,
                                                 args.reference_repeats)
    load_after = _load()

    print(f"\n{args.num_iter} iterations, dilations {dilations}; times in s = {stat} wall ({stat} process CPU);"
          f" ratio = wall / fused op wall at the same shape and threads (CPU ratio in brackets)\n")
    header = "| candidate | export s | nodes |" + "".join(
        f" {label} {count}T s | ratio | max diff |" for label, count in results) + ""
    print(header)
    print("|---|---|---|" + "---|---|---|" * len(results))
    row_names = list(info) + (["fused op"] if fused is not None else []) + ["reference (eager)"]
    for name in row_names:
        cells = [name]
        if name in info:
            cells += [f"{info[name]['export_s']:.1f}", str(info[name]["nodes"])]
        else:
            cells += ["-", "-"]
        for rows in results.values():
            row, base = rows[name], rows.get("fused op")
            cells.append(f"{row['wall']:.3f} ({row['cpu']:.3f})")
            cells.append(f"{row['wall'] / base['wall']:.1f}x ({row['cpu'] / base['cpu']:.1f}x)" if base else "-")
            cells.append(f"{row['diff']:.1e}")
        print("| " + " | ".join(cells) + " |")
    print(f"\nload average (1 min): {load_before:.2f} before, {load_after:.2f} after; exported files in {folder}")
    for name in info:
        print(f"  {name}: {CANDIDATES[name][0]}")


if __name__ == "__main__":
    main()
