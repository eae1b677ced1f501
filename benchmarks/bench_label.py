"""Labelling speed: `aesipe-label` (ONNX Runtime, overlapped pipeline; local and Ray engines) vs plain loops.

    python benchmarks/bench_label.py [--images 48] [--checkpoint seg/final.pt] [--work DIR] [--ray-actors 1,2]
                                     [--int8-model segmenter_int8.onnx] [--rounds 1] [--folder PHOTOS] [--one-stream]
                                     [--device cpu|cuda] [--half]

Same model (DeepLabV3-MobileNetV2: random init unless --checkpoint), same folder of synthetic 500x375
JPEGs (or the *.jpg of ``--folder``, e.g. real photos of mixed sizes), same output (palette PNGs). Each
contender runs in its own process, one after the other, in this one invocation (compare rows of one run: the
load of a shared machine moves between runs). Columns:
- images/s: the contender's own labelling loop (model loading excluded; the total wall time includes it).
  The Ray rows (`--engine ray --actors N`, a fresh local Ray cluster of this machine's cores, needs
  `pip install 'aesipe[ray]'`) count from the dataset's start, so the actors' start-up is in it.
- steady images/s: (masks - 1) / (last mask's mtime - first mask's mtime), the same measure for every row:
  the rate once the first mask is out, start-up excluded.
- first mask s: from the process's launch to its first mask on disk (imports, model, Ray and actors' start).
- Ray first result s: `report.json`'s `first_result_s`, the dataset's start to the first record at the driver.
- peak RSS: the process's max RSS (os.wait4); for Ray, the largest of the driver and the processes it reaped,
  not the sum over the actors.
- same masks: bit-for-bit equal to the local engine's.
The plain ONNX Runtime loop is examples/ort_client.py's pre-processing, one image at a time, default threads.
``--int8-model`` (an `aesipe-export --int8` file of the same checkpoint) adds an aesipe-label row for it (its
"same masks" counts masks equal to the float32 file's); ``--rounds N`` runs the contenders N times, alternating;
``--one-stream`` adds each aesipe-label row again with ``--streams 1`` (its default runs two model calls at once
on a CPU of two cores or more). ``--device cuda`` runs every contender on the GPU (ONNX Runtime's CUDA provider;
aesipe-label's --device cuda, which binds inputs and outputs with IO binding); ``--half`` exports and labels
with a float16 file (``aesipe-export --half``, ``aesipe-label --half``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["background"] + [f"class{i}" for i in range(1, 21)]


def make_folder(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / f"img_{i:03d}.jpg"
        if not path.exists():
            coarse = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
            image = np.asarray(coarse.resize((500, 375), Image.Resampling.BICUBIC)).astype(np.int16)
            image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(path, quality=90)


def make_checkpoint(path: Path) -> None:
    import dataclasses

    import torch

    from aesipe.config import RunConfig, to_dict
    from aesipe.models.deeplab import build_deeplabv3

    cfg = RunConfig()
    cfg = dataclasses.replace(cfg, seg=dataclasses.replace(cfg.seg, backbone="mobilenet_v2", no_pretrained=True))
    torch.manual_seed(0)
    net = build_deeplabv3(len(CLASSES) - 1, backbone="mobilenet_v2", no_pretrained=True)
    torch.save({"format": "aesipe-checkpoint", "version": 1, "kind": "deeplabv3", "model": net.state_dict(),
                "config": to_dict(cfg), "class_names": CLASSES}, path)


def prepare_worker(checkpoint: Path, model: Path, half: bool) -> None:
    if not checkpoint.exists():
        make_checkpoint(checkpoint)
    if not model.exists():
        from aesipe.export.api import export_model

        export_model(checkpoint, model, half=half, log=lambda m: print(f"  export: {m}"))


def eager_worker(checkpoint: Path, folder: Path, out: Path, device: str) -> None:
    """The baseline: one image at a time, PIL decode -> normalise -> model -> argmax -> PNG."""
    import torch

    from aesipe.export.sources import load_source
    from aesipe.utils.labelpng import save_label_png, voc_palette

    started = time.perf_counter()
    net = load_source(checkpoint).net.eval().to(device)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    palette = voc_palette()
    loop = time.perf_counter()
    paths = sorted(folder.glob("*.jpg"))
    with torch.inference_mode():
        for path in paths:
            rgb = np.asarray(Image.open(path).convert("RGB"))
            x = (torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - mean) / std
            out_ = net(x[None].to(device))
            logits = out_["out"] if isinstance(out_, dict) else out_
            save_label_png(out / (path.stem + ".png"), logits[0].argmax(0).to(torch.uint8).cpu().numpy(), palette)
    end = time.perf_counter()
    print(json.dumps({"loop_s": end - loop, "total_s": end - started, "images": len(paths)}))


def ort_worker(model: Path, folder: Path, out: Path, device: str) -> None:
    """The plain ONNX Runtime loop: one image at a time, ort_client's pre-processing -> labels -> PNG."""
    import importlib.util

    import onnxruntime as ort

    from aesipe.utils.labelpng import save_label_png, voc_palette

    spec = importlib.util.spec_from_file_location("ort_client", Path(__file__).parents[1] / "examples" / "ort_client.py")
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    started = time.perf_counter()
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(model), providers=providers)
    if session.get_providers()[0] != providers[0]:
        raise SystemExit(f"onnxruntime runs on {session.get_providers()}, not {providers[0]}")
    fmt = json.loads(session.get_modelmeta().custom_metadata_map["input_format"])
    palette = voc_palette()
    loop = time.perf_counter()
    paths = sorted(folder.glob("*.jpg"))
    for path in paths:
        with Image.open(path) as image:
            batch, height, width = client.preprocess(image, fmt)
        labels = session.run(["labels"], {"image": batch})[0][0, :height, :width]
        save_label_png(out / (path.stem + ".png"), np.ascontiguousarray(labels, dtype=np.uint8), palette)
    end = time.perf_counter()
    print(json.dumps({"loop_s": end - loop, "total_s": end - started, "images": len(paths)}))


def same_masks(out: Path, reference: Path) -> str:
    from aesipe.utils.labelpng import load_label_png

    names = sorted(p.name for p in reference.glob("*.png"))
    same = sum(1 for n in names if (out / n).is_file() and (load_label_png(out / n) == load_label_png(reference / n)).all())
    return f"{same}/{len(names)}"


def pixel_agreement(out: Path, reference: Path) -> float:
    from aesipe.utils.labelpng import load_label_png

    same = total = 0
    for path in sorted(reference.glob("*.png")):
        want = load_label_png(path)
        got = load_label_png(out / path.name) if (out / path.name).is_file() else np.full_like(want, 255)
        same, total = same + int((got == want).sum()), total + want.size
    return same / max(total, 1)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_measured(cmd: list[str]) -> tuple[str, float, float, float]:
    """Run ``cmd``; return (stdout, wall seconds, peak RSS MiB of that process, its launch time as time.time())."""
    launched, started = time.time(), time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return stdout, wall, usage.ru_maxrss / 1024, launched


def mask_timing(folder: Path, launched: float) -> tuple[float, float]:
    """(seconds from launch to the first mask, steady images/s) from the mtimes of the masks written since launch."""
    times = sorted(t for t in (p.stat().st_mtime for p in folder.glob("*.png")) if t >= launched)
    if len(times) < 2 or times[-1] == times[0]:  # too few masks for a rate
        return (times[0] - launched if times else float("nan")), float("nan")
    return times[0] - launched, (len(times) - 1) / (times[-1] - times[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--folder", type=Path, help="label this folder's *.jpg instead of --images synthetic JPEGs")
    parser.add_argument("--checkpoint", type=Path, help="a DeepLabV3 checkpoint (default: MobileNetV2 random init)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "aesipe_bench_label")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--ray-actors", default="1,2", help="actor counts of the Ray rows ('' for none)")
    parser.add_argument("--int8-model", type=Path, help="an int8 export of the same checkpoint: one more aesipe-label row")
    parser.add_argument("--rounds", type=int, default=1, help="run the contenders this many times, alternating")
    parser.add_argument("--one-stream", action="store_true",
                        help="also run each aesipe-label row with --streams 1 (one model call at a time, every core)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where every contender runs")
    parser.add_argument("--half", action="store_true", help="export and label a float16 file")
    parser.add_argument("--eager-worker", nargs=3, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ort-worker", nargs=3, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prepare-worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.eager_worker:
        return eager_worker(*args.eager_worker, args.device)
    if args.ort_worker:
        return ort_worker(*args.ort_worker, args.device)
    if args.prepare_worker:
        return prepare_worker(*args.prepare_worker, args.half)

    work = args.work
    load_before = load_average()
    folder = args.folder or work / f"images_{args.images}"
    if not args.folder:
        make_folder(folder, args.images)
    count = len(list(folder.glob("*.jpg")))
    if not count or len(list(folder.iterdir())) != count:  # aesipe-label takes every image, the loops *.jpg
        sys.exit(f"{folder}: the folder must hold *.jpg files and nothing else")
    checkpoint = args.checkpoint or work / "deeplabv3_mobilenet_v2_random.pt"
    if args.checkpoint and not checkpoint.is_file():
        sys.exit(f"{checkpoint}: no such checkpoint")
    # Named after the checkpoint's path and time: another checkpoint of the same file name never reuses its export
    # (the default random one, made by the worker below, is always the same model).
    stamp = f"{checkpoint.resolve()}:{checkpoint.stat().st_mtime_ns}" if args.checkpoint else "random"
    model = work / f"{checkpoint.stem}_{hashlib.sha256(stamp.encode()).hexdigest()[:10]}{'_fp16' if args.half else ''}.onnx"
    # In a child: Linux carries a parent's peak RSS into children it forks, so this process stays torch-free.
    me = [sys.executable, __file__, "--device", args.device] + (["--half"] if args.half else [])
    subprocess.run(me + ["--prepare-worker", str(checkpoint), str(model)], check=True)

    def contender(name: str, cmd: list[str], out: Path, label_run: bool) -> dict:
        """Run one contender writing its masks under ``out``; aesipe-label's own figures come from its report."""
        masks = out / "masks" if label_run else out
        shutil.rmtree(out, ignore_errors=True)  # another folder's masks must not count (same names, other images)
        masks.mkdir(parents=True)
        stdout, wall, rss, launched = run_measured(cmd)
        first, steady = mask_timing(masks, launched)
        if label_run:
            summary = json.loads((out / "report.json").read_text())["summary"]
            ips = summary["images_per_second"]
        else:  # a plain loop's own timing, printed by its worker
            summary = json.loads(stdout.strip().splitlines()[-1])
            ips = summary["images"] / summary["loop_s"]
        return {"name": name, "ips": ips, "steady": steady, "first": first, "wall": wall, "rss": rss, "masks": masks,
                "summary": summary}

    label = [str(Path(sys.executable).with_name("aesipe-label")), str(model), str(folder)]
    options = ["--overwrite", "--batch-size", str(args.batch_size), "--device", args.device] + (["--half"] if args.half else [])
    rounds = []
    for _ in range(max(1, args.rounds)):
        eager = contender("eager PyTorch loop", me + ["--eager-worker", str(checkpoint), str(folder), f"{work}/eager_out"],
                          work / "eager_out", label_run=False)
        plain = contender("plain ONNX Runtime loop", me + ["--ort-worker", str(model), str(folder), f"{work}/ort_out"],
                          work / "ort_out", label_run=False)
        local = contender(f"aesipe-label, local engine, batch {args.batch_size}", label + [f"{work}/label_out"] + options,
                          work / "label_out", label_run=True)
        rows = [eager, plain, local]
        if args.one_stream:
            rows.append(contender(f"aesipe-label, local engine, batch {args.batch_size}, --streams 1",
                                  label + [f"{work}/label_1_out"] + options + ["--streams", "1"], work / "label_1_out",
                                  label_run=True))
        if args.int8_model:
            int8 = [label[0], str(args.int8_model), str(folder), f"{work}/int8_out"] + options
            rows.append(contender(f"aesipe-label, int8 file, batch {args.batch_size}", int8, work / "int8_out", label_run=True))
            if args.one_stream:
                rows.append(contender(f"aesipe-label, int8 file, batch {args.batch_size}, --streams 1",
                                      [*int8[:3], f"{work}/int8_1_out", *options, "--streams", "1"],
                                      work / "int8_1_out", label_run=True))
        for actors in [int(a) for a in args.ray_actors.split(",") if a.strip()]:
            ray = ["--engine", "ray", "--actors", str(actors)]
            row = contender("", label + [f"{work}/ray_out_{actors}"] + options + ray, work / f"ray_out_{actors}", label_run=True)
            row["name"] = f"aesipe-label --engine ray, {actors} actor(s) x {row['summary']['ray']['threads']} thread(s)"
            rows.append(row)
        rounds.append((rows, local, eager, plain))
    load_after = load_average()

    what = f"checkpoint {args.checkpoint}" if args.checkpoint else "random init, 21 classes"
    photos = f"{count} JPEGs of {folder}" if args.folder else f"{count} JPEGs 500x375"
    gpu = f", {args.device} ({'float16' if args.half else 'float32'} file)" if args.device == "cuda" or args.half else ""
    print(f"\n{photos}, DeepLabV3-MobileNetV2 ({what}){gpu}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, load average (1, 5, 15 min) {load_before} before, "
          f"{load_after} after\n")
    print("| round | contender | images/s | steady images/s | first mask s | Ray first result s | total wall s "
          "| peak RSS MiB | same masks |")
    print("|---|---|---|---|---|---|---|---|---|")
    for index, (rows, local, _, _) in enumerate(rounds, 1):
        for r in rows:
            same = "reference" if r is local else same_masks(r["masks"], local["masks"])
            if "int8" in r["name"]:
                same += f" ({pixel_agreement(r['masks'], local['masks']):.2%} of pixels)"
            ray_first = r["summary"].get("ray", {}).get("first_result_s")
            print(f"| {index} | {r['name']} | {r['ips']:.2f} | {r['steady']:.2f} | {r['first']:.1f} | "
                  f"{'-' if ray_first is None else f'{ray_first:.1f}'} | "
                  f"{r['wall']:.1f} | {r['rss']:.0f} | {same} |")
    for index, (rows, local, eager, plain) in enumerate(rounds, 1):
        print(f"\nround {index}: aesipe-label local vs eager PyTorch {local['ips'] / eager['ips']:.2f}x, vs plain ONNX "
              f"Runtime {local['ips'] / plain['ips']:.2f}x (steady: {local['steady'] / plain['steady']:.2f}x)")
        for r in rows[3:]:
            print(f"round {index}: {r['name']} vs the plain ONNX Runtime loop: {r['ips'] / plain['ips']:.2f}x, vs local "
                  f"engine: {r['ips'] / local['ips']:.2f}x (steady: {r['steady'] / local['steady']:.2f}x)")
    print(f"aesipe-label busy seconds per stage (last round): {rounds[-1][1]['summary']['stage_busy_seconds']}")

if __name__ == "__main__":
    main()
