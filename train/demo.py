"""``aesipe-train demo``: the whole method on built-in synthetic data, sized for a laptop CPU.

Synthetic scenes (``aesipe.data.synth``) -> every pipeline stage (stage 1, CAMs, IR labels, IRN,
random-walk labels, DeepLabV3) -> ONNX export -> labelling a folder of images with the exported model.
The recipe lives here (the installed command needs no repository checkout); ``configs/demo.toml`` is
the same recipe as a file, for ``aesipe-train pipeline RUN --recipe configs/demo.toml``.
Everything resumes: a second ``demo`` skips finished work.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from aesipe.config import RunConfig, load_config, merge

SYNTH = {"num_train": 320, "num_val": 80, "size": 96, "seed": 0, "num_classes": 4}
"""The synthetic dataset the demo generates (``aesipe.data.synth.generate`` arguments)."""

# MobileNetV2 networks (model.pretrained = the tag-pretrained file of ``demo_init``; IRN and the
# segmenter reuse it), 96-px images, a few hundred steps per stage.
DEMO_RECIPE: dict[str, Any] = {
    "data": {"kind": "folder", "train_split": "train", "cam_split": "train", "eval_split": "val", "workers": 0},
    "runtime": {"device": "cpu"},
    "model": {"backbone": "mobilenet_v2"},
    "train": {"batch_size": 16, "epochs": 100, "max_steps": 500, "crop_size": 96, "resize_long": [80, 112], "lr": 0.05,
              "checkpoint_every": 100, "log_every": 20},
    "cam": {"scales": [1.0, 0.75, 1.25]},
    "crf": {"workers": 2},
    "ir_label": {"workers": 2},
    "irn": {"backbone": "mobilenet_v2", "crop_size": 96, "batch_size": 16, "epochs": 100, "max_steps": 100,
            "path_radius": 5, "checkpoint_every": 50, "log_every": 10},
    "seg": {"backbone": "mobilenet_v2", "crop_size": 96, "scale_range": [0.75, 1.25],
            "batch_size": 16, "epochs": 100, "max_steps": 200, "lr": 0.01, "checkpoint_every": 100, "log_every": 20},
}  # fmt: skip


INIT_FILE = "init/mobilenet_v2_tags.pth"
INIT_STEPS = 200


def demo_config(out: Path, overrides: Sequence[str] = ()) -> RunConfig:
    weights = str(out / INIT_FILE)
    base = merge(DEMO_RECIPE, {"run_dir": str(out / "run"), "data": {"root": str(out / "data")},
                               "model": {"pretrained": weights}})  # fmt: skip
    return load_config(RunConfig, None, list(overrides), base=base)


def _example_images(data_root: Path, ids: Sequence[str], dest: Path) -> Path:
    """A plain folder of images to label (copies of the val images)."""
    dest.mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        for source in (data_root / "JPEGImages").glob(f"{image_id}.*"):
            if not (dest / source.name).is_file():
                shutil.copyfile(source, dest / source.name)
    return dest


def _export_and_label(cfg: RunConfig, out: Path, echo: Callable[[str], None]) -> list[str]:
    """Export the segmenter to ONNX and label a folder with it; returns lines for the summary."""
    try:
        from aesipe.export.api import export_model
        from aesipe.infer import label_folder
    except ImportError as exc:
        return [f"export / labelling skipped: {exc}"]
    from aesipe.data import open_dataset
    from aesipe.utils.errors import UserError

    try:
        model_path = out / "segmenter.onnx"
        if not model_path.is_file():
            echo("[export] DeepLabV3 -> ONNX")
            export_model(cfg.run_dir, model_path, format="onnx", log=echo)
        ids = open_dataset(cfg.data, cfg.data.eval_split).ids[:24]
        images = _example_images(Path(cfg.data.root), ids, out / "images")
        echo(f"[label] {len(ids)} images with the exported model")
        label_folder(model_path, images, out / "labelled", overlay=True, progress=False, log=echo)
    except UserError as exc:
        return [f"export / labelling failed: {exc}"]
    return [
        f"exported segmenter:  {model_path}",
        f"labelled images:     {out / 'labelled'} (masks/ = palette PNGs, overlays/ = colour blends)",
        f"  (again: aesipe-label {model_path} {images} {out / 'labelled'} --overlay)",
    ]


def _baseline_note(run_dir: Path) -> str:
    """What labelling every pixel background would score on the eval split (the floor to beat)."""
    try:
        confusion = json.loads((run_dir / "seg_eval.json").read_text())["confusion"]
    except (OSError, ValueError, KeyError):
        return ""
    rows = [sum(row) for row in confusion]
    present = sum(1 for r in rows if r > 0)
    if not present or not sum(rows):
        return ""
    return f" (all-background labels would score {100 * rows[0] / sum(rows) / present:.1f}%)"


def run_demo(
    out: str | Path = "demo",
    overrides: Sequence[str] = (),
    synth: dict[str, Any] | None = None,
    echo: Callable[[str], None] = print,
    export: bool = True,
    init_steps: int = INIT_STEPS,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo into ``out`` and return the pipeline manifest.

    ``overrides`` (dotted config overrides) and ``synth`` (dataset settings) exist for tests;
    ``export=False`` stops after the pipeline (no ONNX export / labelling)."""
    from aesipe.data.synth import generate

    from .demo_init import pretrain_on_tags
    from .pipeline import run_pipeline
    from .pipeline_summary import summary_lines

    started = time.perf_counter()
    out = Path(out)
    settings = {**SYNTH, **(synth or {})}
    echo(f"[data] {settings['num_train']} + {settings['num_val']} synthetic {settings['size']}-px images")
    generate(out / "data", settings["num_train"], settings["num_val"], settings["size"], settings["seed"],
             settings["num_classes"], progress=False)  # fmt: skip
    cfg = demo_config(out, overrides)
    echo(f"[init] MobileNetV2 pretrained on the training tags ({init_steps} steps; stands in for ImageNet weights)")
    pretrain_on_tags(out / INIT_FILE, cfg.data, cfg.data.train_split, steps=init_steps, progress=progress)
    manifest = run_pipeline(cfg, echo=echo)
    extra = _export_and_label(cfg, out, echo) if export else []
    minutes = (time.perf_counter() - started) / 60
    lines = [
        "",
        f"demo finished in {minutes:.1f} min. mIoU by stage{_baseline_note(Path(cfg.run_dir))}:",
        *summary_lines(manifest),
        "",
        f"run directory:       {cfg.run_dir} (manifest.json, config.toml, checkpoints, *_eval.json)",
        f"pseudo-labels:       {Path(cfg.run_dir) / 'seg_labels' / cfg.data.cam_split}",
        *extra,
    ]
    echo("\n".join(lines))
    return manifest
