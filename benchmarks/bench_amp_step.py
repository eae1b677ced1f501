"""Stage-1 training steps at the paper's shape through the real training loop, with mixed precision on CUDA.

    python benchmarks/bench_amp_step.py [--device cuda] [--backbone resnet50] [--batch 16] [--crop 512]
                                        [--steps 4] [--out TABLE.md]

Runs ``aesipe.train.loop.train_loop`` (the code ``aesipe-train train`` runs: ``runtime.amp`` = float16 autocast
and a grad scaler on CUDA, off on the CPU) on random images and tags, AE-SIPE network with random init (no
ImageNet weights are read: the point is the step, not the result) and PAMR on the fused op when it is built.
The first step includes cuDNN's algorithm search; the table gives it apart, then the median of the others.
Checks that every loss is finite, that autocast was on (convolution outputs in float16) and that the scaler
took every step; exits non-zero otherwise.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

NUM_CLASSES = 20


class RandomTagsDataset(torch.utils.data.Dataset):
    """``count`` stage-1 samples: a random image, one to three random tags, everything valid."""

    def __init__(self, count: int, crop: int):
        gen = torch.Generator().manual_seed(0)
        self.images = torch.rand(count, 3, crop, crop, generator=gen) * 4 - 2  # about ImageNet-normalised
        self.labels = torch.zeros(count, NUM_CLASSES)
        for i in range(count):
            self.labels[i, torch.randperm(NUM_CLASSES, generator=gen)[: 1 + i % 3]] = 1.0
        self.valid = torch.ones(crop, crop)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "labels": self.labels[index], "valid": self.valid, "id": str(index)}


def run(args: argparse.Namespace, work: Path) -> dict:
    from aesipe.config import RunConfig, load_config, to_dict
    from aesipe.models.aesipe_net import build_aesipe
    from aesipe.ops import pamr_backend_for
    from aesipe.train import engine, loop
    from aesipe.train.stages.stage1 import stage1_losses

    cfg = load_config(RunConfig, None, [
        f"run_dir={work}", f"model.backbone={args.backbone}", "model.no_pretrained=true",
        f"train.batch_size={args.batch}", f"train.crop_size={args.crop}", f"train.max_steps={args.steps}",
        f"train.checkpoint_every={args.steps}", "train.log_every=1", f"runtime.device={args.device}",
    ])
    device = engine.select_device(cfg.runtime.device)
    engine.seed_everything(0)
    model = build_aesipe(cfg, NUM_CLASSES)
    dataset = RandomTagsDataset(args.batch * args.steps, args.crop)
    t = cfg.train
    optimizer, scheduler, spec = loop.solver_setup(
        t, "train", model.parameter_groups(), [1.0, t.new_layer_lr_mult], len(dataset), engine.DistInfo(),
        cfg.runtime, stage_dir=work / "stage1", kind="aesipe", workers=0, grad_clip=t.grad_clip,
    )
    conv_dtypes: set[torch.dtype] = set()
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, _, out: conv_dtypes.add(out.dtype) if isinstance(module, torch.nn.Conv2d) else None)
    stamps, losses = [], []

    def timed_losses(net, batch):
        # Called once per step, after the previous step's optimiser update: the gaps between calls are steps.
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        out = stage1_losses(net, batch, t.gsc_weight)
        losses.append({k: float(v.detach()) for k, v in out.items()})
        return out

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        loop.train_loop(model, optimizer, scheduler, dataset, timed_losses, spec, device, to_dict(cfg),
                        ["background"] + [f"class{i}" for i in range(1, NUM_CLASSES + 1)])
    finally:
        hook.remove()
    if device.type == "cuda":
        torch.cuda.synchronize()
    stamps.append(time.perf_counter())  # after the last step (and the final checkpoint: excluded below)
    state = torch.load(work / "stage1" / "checkpoints" / "last.pt", weights_only=False)
    steps = [b - a for a, b in zip(stamps[:-1], stamps[1:-1])]
    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "CPU",
        "amp": cfg.runtime.amp and device.type == "cuda", "conv_dtypes": sorted(str(d) for d in conv_dtypes),
        "pamr": pamr_backend_for(device), "losses": losses, "first_step_s": steps[0] if steps else float("nan"),
        "step_s": statistics.median(steps[1:]) if len(steps) > 1 else float("nan"),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
        "scale": state["scaler"].get("scale", None) if state.get("scaler") else None,
        "scale_start": torch.amp.GradScaler(device.type, enabled=device.type == "cuda").get_scale(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda or cpu (a CPU run is a smoke test of this script)")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps (the first one is reported apart)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = run(args, Path(tmp))
    finite = all(math.isfinite(v) for step in r["losses"] for v in step.values())
    autocast_on = r["conv_dtypes"] == ["torch.float16"] if r["amp"] else True
    scaler_kept = r["scale"] is None or r["scale"] == r["scale_start"]
    last = r["losses"][-1] if r["losses"] else {}
    table = "\n".join([
        f"Stage-1 step, AE-SIPE {args.backbone} (random init), batch {args.batch}, crop {args.crop}, {r['device']}, "
        f"torch {torch.__version__}, mixed precision {'on (float16 autocast + grad scaler)' if r['amp'] else 'off'}, "
        f"PAMR backend {r['pamr']}",
        "",
        "| steps | first step s | median step s (later steps) | images/s | peak GPU memory GiB | last loss (cls, gsc) "
        "| conv output dtypes | all losses finite | scaler skipped no step |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {len(r['losses'])} | {r['first_step_s']:.2f} | {r['step_s']:.3f} | {args.batch / r['step_s']:.1f} | "
        f"{r['peak_gib']:.1f} | {last.get('loss', float('nan')):.4f} ({last.get('loss_cls', float('nan')):.4f}, "
        f"{last.get('loss_gsc', float('nan')):.4f}) | {', '.join(r['conv_dtypes'])} | {finite} | {scaler_kept} |",
    ])
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    if not (finite and autocast_on and scaler_kept and len(r["losses"]) == args.steps):
        print("bench_amp_step: FAILED (non-finite loss, autocast off, a skipped step or missing steps)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
