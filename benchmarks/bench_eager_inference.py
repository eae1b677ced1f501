"""The training pipeline's eager inference stages with and without ``aesipe.models.inference.for_inference``
(BatchNorm folded into the convolutions, channels-last weights): seconds per image and the largest difference.

    .venv/bin/python benchmarks/bench_eager_inference.py [--images 6] [--size 213x320] [--run RUN --data ROOT]

Three stand-ins for the stages, random-init networks on random images of ``--size``: make-cam's
``image_maps`` (AE-SIPE MobileNetV2, 4 scales + flip, one tag), eval-seg's ``predict_probabilities``
(DeepLabV3-MobileNetV2, 3 scales + flip) and make-seg-labels' ``edge_probabilities`` (IRN ResNet-50).
With ``--run`` (a trained AE-SIPE run) and ``--data`` (its dataset root), make-cam runs that run's network
and test-time settings on the first ``--images`` photos of its ``val`` split instead. The two contenders
alternate image by image in one process; the load average is printed before and after.
"""
from __future__ import annotations

import argparse
import copy
import os
import time

import numpy as np
import torch


def _make_cam_case(args):
    from aesipe.models.pseudo_maps import CamSettings
    from aesipe.train.stages.make_cam import image_maps

    if args.run:
        from aesipe.data import open_dataset
        from aesipe.train.runconfig import resolve_run_config
        from aesipe.train.stages.make_cam import load_stage1_model

        cfg = resolve_run_config(args.run, None, [f"data.root={args.data}"], save=False)
        model, _ = load_stage1_model(cfg)
        ds = open_dataset(cfg.data, "val")
        inputs = [(ds.load_image(i), ds.labels(i)) for i in ds.ids[: args.images]]
        tt = CamSettings.from_config(cfg)
    else:
        import dataclasses

        from aesipe.config import RunConfig
        from aesipe.models.aesipe_net import build_aesipe

        cfg = RunConfig()
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone="mobilenet_v2"))
        model = build_aesipe(cfg, 16, backbone_weights=False).eval()
        rng = np.random.default_rng(0)
        tags = np.eye(16, dtype=np.float32)[3]
        inputs = [(rng.integers(0, 256, (*args.size, 3), dtype=np.uint8), tags) for _ in range(args.images)]
        tt = CamSettings((1.0, 0.5, 1.5, 2.0), True)

    def run(net, item):
        maps = image_maps(net, item[0], item[1], tt, torch.device("cpu"))
        return torch.from_numpy(np.stack([maps[key] for key in sorted(maps)]))

    return "make-cam (AE-SIPE MobileNetV2, 4 scales + flip)", model, inputs, run


def _seg_eval_case(args):
    from aesipe.models.deeplab import build_deeplabv3
    from aesipe.train.stages.seg_eval import predict_probabilities

    model = build_deeplabv3(16, "mobilenet_v2", no_pretrained=True).eval()
    inputs = [torch.randn(3, *args.size, generator=torch.Generator().manual_seed(i)) for i in range(args.images)]
    return ("eval-seg (DeepLabV3-MobileNetV2, 3 scales + flip)", model, inputs,
            lambda net, x: predict_probabilities(net, x, (1.0, 0.5, 1.5), True))


def _random_walk_case(args):
    from aesipe.models.irn import build_irn

    model = build_irn("resnet50", no_pretrained=True).eval()
    inputs = [torch.randn(3, *args.size, generator=torch.Generator().manual_seed(i)) for i in range(args.images)]
    return "make-seg-labels' IRN edges (ResNet-50)", model, inputs, lambda net, x: net.edge_probabilities(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", default="213x320", help="HxW of the random images")
    parser.add_argument("--run", help="a trained AE-SIPE run directory (make-cam on its val photos)")
    parser.add_argument("--data", help="the run's dataset root (with --run)")
    args = parser.parse_args()
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    if bool(args.run) != bool(args.data):
        parser.error("--run and --data go together")

    from aesipe.models.inference import for_inference

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load before {os.getloadavg()[0]:.2f}")
    print("\n| stage | plain s/image | folded s/image | speed-up | max abs diff |\n|---|---|---|---|---|")
    for case in (_make_cam_case, _seg_eval_case, _random_walk_case):
        name, model, inputs, run = case(args)
        folded = for_inference(copy.deepcopy(model))
        seconds, diff = {"plain": 0.0, "folded": 0.0}, 0.0
        with torch.no_grad():
            for net in (model, folded):  # warm-up: first-call allocations
                run(net, inputs[0])
            for index, item in enumerate(inputs):
                order = (("plain", model), ("folded", folded))
                outputs = {}
                for label, net in order if index % 2 == 0 else order[::-1]:
                    started = time.perf_counter()
                    outputs[label] = run(net, item)
                    seconds[label] += time.perf_counter() - started
                diff = max(diff, (outputs["plain"] - outputs["folded"]).abs().max().item())
        plain, fast = seconds["plain"] / len(inputs), seconds["folded"] / len(inputs)
        print(f"| {name} | {plain:.3f} | {fast:.3f} | {plain / fast:.2f}x | {diff:.1e} |", flush=True)
    print(f"\nload after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
