"""Labelling speed: `aesipe-label` (ONNX Runtime, overlapped pipeline) vs a plain eager-PyTorch loop.

    python benchmarks/bench_label.py [--images 48] [--checkpoint seg/final.pt] [--work DIR]

Same model (DeepLabV3-MobileNetV2: random init unless --checkpoint), same folder of synthetic 500x375
JPEGs, same output (palette PNGs). Each contender runs in its own process; peak memory is that
process's max RSS (os.wait4). Throughput counts the labelling loop (model loading excluded, reported
separately as total wall time).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
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


def prepare_worker(checkpoint: Path, model: Path) -> None:
    if not checkpoint.exists():
        make_checkpoint(checkpoint)
    if not model.exists():
        from aesipe.export.api import export_model

        export_model(checkpoint, model, log=lambda m: print(f"  export: {m}"))


def eager_worker(checkpoint: Path, folder: Path, out: Path) -> None:
    """The baseline: one image at a time, PIL decode -> normalise -> model -> argmax -> PNG."""
    import torch

    from aesipe.export.sources import load_source
    from aesipe.utils.labelpng import save_label_png, voc_palette

    started = time.perf_counter()
    net = load_source(checkpoint).net.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    palette = voc_palette()
    loop = time.perf_counter()
    paths = sorted(folder.glob("*.jpg"))
    with torch.inference_mode():
        for path in paths:
            rgb = np.asarray(Image.open(path).convert("RGB"))
            x = (torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - mean) / std
            out_ = net(x[None])
            logits = out_["out"] if isinstance(out_, dict) else out_
            save_label_png(out / (path.stem + ".png"), logits[0].argmax(0).to(torch.uint8).numpy(), palette)
    end = time.perf_counter()
    print(json.dumps({"loop_s": end - loop, "total_s": end - started, "images": len(paths)}))


def run_measured(cmd: list[str]) -> tuple[str, float, float]:
    """Run ``cmd``; return (stdout, wall seconds, peak RSS MiB of that process)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return stdout, wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--checkpoint", type=Path, help="a DeepLabV3 checkpoint (default: MobileNetV2 random init)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "aesipe_bench_label")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--eager-worker", nargs=3, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prepare-worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.eager_worker:
        return eager_worker(*args.eager_worker)
    if args.prepare_worker:
        return prepare_worker(*args.prepare_worker)

    work = args.work
    folder = work / f"images_{args.images}"
    make_folder(folder, args.images)
    checkpoint = args.checkpoint or work / "deeplabv3_mobilenet_v2_random.pt"
    model = work / (checkpoint.stem + ".onnx")
    # In a child: Linux carries a parent's peak RSS into children it forks, so this process stays torch-free.
    subprocess.run([sys.executable, __file__, "--prepare-worker", str(checkpoint), str(model)], check=True)

    eager_out = work / "eager_out"
    eager_out.mkdir(exist_ok=True)
    stdout, eager_wall, eager_rss = run_measured(
        [sys.executable, __file__, "--eager-worker", str(checkpoint), str(folder), str(eager_out)])
    eager = json.loads(stdout.strip().splitlines()[-1])
    label_out = work / "label_out"
    label_bin = Path(sys.executable).with_name("aesipe-label")
    _, label_wall, label_rss = run_measured(
        [str(label_bin), str(model), str(folder), str(label_out), "--overwrite", "--batch-size", str(args.batch_size)])
    report = json.loads((label_out / "report.json").read_text())["summary"]

    eager_ips = eager["images"] / eager["loop_s"]
    label_ips = report["images_per_second"]
    rows = [("eager PyTorch loop (CPU)", eager_ips, eager_wall, eager_rss),
            (f"aesipe-label ONNX Runtime CPU, batch {args.batch_size}", label_ips, label_wall, label_rss)]
    print(f"\n{args.images} JPEGs 500x375, DeepLabV3-MobileNetV2 (21 classes), {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'contender':44s} {'images/s':>9s} {'total wall s':>13s} {'peak RSS MiB':>13s}")
    for name, ips, wall, rss in rows:
        print(f"{name:44s} {ips:9.2f} {wall:13.1f} {rss:13.0f}")
    print(f"speed-up (loop throughput): {label_ips / eager_ips:.2f}x; aesipe-label busy seconds per stage: "
          f"{report['stage_busy_seconds']}")


if __name__ == "__main__":
    main()
