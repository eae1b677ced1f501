#!/usr/bin/env python3
"""Issue 24, item 4: how often a tagged class's map is all zero, and how good the stand-ins are (val).

    python benchmarks/msrc_zero_maps.py RUN OUT.json [--split val] [--scale 1.0]

For every image of the split, the run's network makes its fused maps (``aesipe.models.pseudo_maps``, the
run's scales and flip) without the fallback; counted: tagged classes whose CAM / IS-CAM / AE-IS-CAM is zero
everywhere. Then each stand-in is judged *as if every tagged class had fallen back* (all tagged foreground
channels of the selected map replaced, its background channel kept), labels at background x ``--scale``:
``map`` (nothing replaced), ``fallback`` (what make-cam does: only the all-zero channels replaced), ``cam``
(the CAM after the ReLU: the stand-in for a zero IS-CAM / AE-IS-CAM when the CAM is not zero), ``prerelu``
(the CAM before the ReLU, min-max normalised per scale: the stand-in when the CAM is zero too). Writes mIoU
and per-class IoU / precision / recall of each to OUT.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch


class _PrereluAsCam(torch.nn.Module):
    """The network's pre-ReLU CAM under the key ``cam``, so ``fused_maps`` sums it like any map."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def maps(self, image, labels, flip=False):
        return {"cam": self.net.maps(image, labels, flip=flip, prerelu=True)["prerelu"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--split", default="val")
    p.add_argument("--scale", type=float, default=1.0)
    a = p.parse_args(argv)

    from aesipe.config.schema import read_run_config
    from aesipe.constants import IMAGENET_MEAN, IMAGENET_STD, PIXEL_SCALE
    from aesipe.data import open_dataset
    from aesipe.models.inference import for_inference
    from aesipe.models.pseudo_maps import CamSettings, fused_maps
    from aesipe.pseudo_labels import keep_image_classes, max_normalise, to_labels
    from aesipe.train.metrics import ConfusionMatrix, confusion_matrix
    from aesipe.train.stages.make_cam import load_stage1_model, map_keys

    torch.set_num_threads(1)
    cfg = read_run_config(a.run / "config.toml")
    model, class_names = load_stage1_model(cfg)
    model = for_inference(model)
    tt = dataclasses.replace(CamSettings.from_config(cfg), zero_map_fallback=False)
    ds = open_dataset(cfg.data, a.split)
    keys = map_keys(model)
    selected = cfg.cam.map
    zero = {key: {} for key in keys}
    zero_images = {key: 0 for key in keys}
    judged = {name: ConfusionMatrix(ds.class_names) for name in ("map", "fallback", "cam", "prerelu")}
    n = ds.num_classes + 1
    for image_id in ds.ids:
        image, tags = ds.load_image(image_id), ds.labels(image_id)
        image01 = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float() * PIXEL_SCALE
        with torch.no_grad():
            sums, _ = fused_maps(model, image01, torch.from_numpy(tags)[None], keys, tt, IMAGENET_MEAN, IMAGENET_STD)
            pre, _ = fused_maps(_PrereluAsCam(model), image01, torch.from_numpy(tags)[None], ("cam",), tt,
                                IMAGENET_MEAN, IMAGENET_STD)
        maps = {key: value[0].numpy() for key, value in sums.items()}
        for key in keys:
            empty = [c for c in np.flatnonzero(tags) + 1 if maps[key][c].max() <= 0]
            zero_images[key] += bool(empty)
            for c in empty:
                zero[key][class_names[c]] = zero[key].get(class_names[c], 0) + 1
        gt = ds.load_mask(image_id)
        prerelu = pre["cam"][0].numpy()
        # the fallback as make-cam applies it: only all-zero tagged channels, by the CAM, else the pre-ReLU CAM
        fallback = maps[selected].copy()
        for c in np.flatnonzero(tags) + 1:
            if fallback[c].max() <= 0:
                fallback[c] = maps["cam"][c] if (selected != "cam" and maps["cam"][c].max() > 0) else prerelu[c]
        stand_ins = {"map": maps[selected], "fallback": fallback, "cam": maps["cam"], "prerelu": prerelu}
        for name, stand_in in stand_ins.items():
            replaced = maps[selected].copy()
            replaced[1:] = stand_in[1:]  # every tagged foreground channel (untagged ones are zero in both)
            classes, kept = keep_image_classes(max_normalise(replaced), tags)
            judged[name].add(confusion_matrix(gt, to_labels(kept, classes, a.scale), n))
    result = {"run": str(a.run), "split": a.split, "images": len(ds.ids), "map": selected, "background_scale": a.scale,
              "zero_maps": {key: {"images": zero_images[key], "classes": zero[key]} for key in keys},
              "stand_ins": {name: m.summary() for name, m in judged.items()}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "stand_ins"}))
    print({name: round(100 * s["miou"], 1) for name, s in result["stand_ins"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
