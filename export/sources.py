"""Resolve what to export: a run directory or a checkpoint file -> the network, its config and classes.

The checkpoint's resolved config says how to rebuild the model (nothing is retyped); the builders come
from ``aesipe.models`` and are looked up in ``BUILDERS`` so tests can substitute tiny networks.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from aesipe.checkpoint_format import KIND_NAMES, read_checkpoint
from aesipe.config import RunConfig, run_config_from_saved
from aesipe.config.schema import read_run_config
from aesipe.utils.errors import UserError

WHAT_CHECKPOINT = {"segmenter": "seg/final.pt", "pseudo_labeller": "stage1/final.pt"}
WHAT_KIND = {"segmenter": "deeplabv3", "pseudo_labeller": "aesipe"}
KIND_WHAT = {kind: what for what, kind in WHAT_KIND.items()}
STAGE_HINT = {
    "segmenter": "train the segmenter first: aesipe-train seg RUN (or the whole method: aesipe-train pipeline RUN)",
    "pseudo_labeller": "train stage 1 first: aesipe-train train RUN",
}


def _build_deeplabv3(cfg: RunConfig, num_foreground: int) -> nn.Module:
    from aesipe.models.deeplab import build_deeplabv3

    # Weights come from the checkpoint: never look for ImageNet weights here.
    return build_deeplabv3(num_foreground, backbone=cfg.seg.backbone, pretrained=None, no_pretrained=True)


def _build_aesipe(cfg: RunConfig, num_foreground: int) -> nn.Module:
    from aesipe.models.aesipe_net import build_aesipe

    model_cfg = dataclasses.replace(cfg.model, pretrained=None, no_pretrained=True)
    return build_aesipe(dataclasses.replace(cfg, model=model_cfg), num_foreground)


BUILDERS: dict[str, Callable[[RunConfig, int], nn.Module]] = {
    "deeplabv3": _build_deeplabv3,
    "aesipe": _build_aesipe,
}


@dataclass
class LoadedModel:
    net: nn.Module
    what: str
    """segmenter | pseudo_labeller"""
    cfg: RunConfig
    class_names: list[str]
    palette: list[list[int]] | None
    checkpoint: Path


def resolve_checkpoint(source: Path, what: str) -> Path:
    if not source.exists():
        raise UserError(f"source not found: {source}")
    if source.is_file():
        return source
    checkpoint = source / WHAT_CHECKPOINT[what]
    if not checkpoint.is_file():
        raise UserError(f"{source} has no {WHAT_CHECKPOINT[what]}: {STAGE_HINT[what]}")
    return checkpoint


def run_dir_of(source: Path, checkpoint: Path) -> Path | None:
    """The run directory a checkpoint belongs to (RUN/, RUN/stage1/final.pt, RUN/stage1/checkpoints/last.pt),
    or None for a checkpoint file outside a run."""
    if source.is_dir():
        return source if (source / "config.toml").is_file() else None
    for parent in checkpoint.resolve().parents[1:3]:
        if (parent / "config.toml").is_file():
            return parent
    return None


def with_run_test_time(cfg: RunConfig, run_dir: Path | None) -> RunConfig:
    """The checkpoint's config (its architecture) with the run's current ``cam`` section: the test-time
    procedure and background scale that make-cam and eval-cam use now, e.g. the scale ``aesipe-train
    calibrate`` stored after training."""
    if run_dir is None:
        return cfg
    return dataclasses.replace(cfg, cam=read_run_config(run_dir / "config.toml").cam)


def load_source(source: str | Path, what: str | None = None) -> LoadedModel:
    """Load the model to export; ``what`` defaults to the checkpoint's kind (run dirs: segmenter)."""
    source = Path(source)
    if what is not None and what not in WHAT_KIND:
        raise UserError(f"--what must be segmenter or pseudo-labeller, got {what!r}")
    path = resolve_checkpoint(source, what or "segmenter")
    data = read_checkpoint(path)
    kind = data["kind"]
    if kind not in KIND_WHAT:
        raise UserError(f"{path} holds an {KIND_NAMES.get(kind, kind)} model: export a segmenter (seg/final.pt) or a "
                        "stage-1 network (stage1/final.pt, --what pseudo-labeller)")
    if what is not None and KIND_WHAT[kind] != what:
        other = KIND_WHAT[kind].replace("_", "-")
        raise UserError(f"{path} holds a {kind} model ({KIND_NAMES.get(kind, 'unknown')}), not a "
                        f"{what.replace('_', '-')}: export it with --what {other}")
    what = KIND_WHAT[kind]
    cfg = with_run_test_time(run_config_from_saved(data["config"]), run_dir_of(source, path))
    class_names = [str(name) for name in data["class_names"]]
    if len(class_names) < 2:
        raise UserError(f"{path}: class_names must list background and at least one class")
    net = BUILDERS[kind](cfg, len(class_names) - 1)
    try:
        net.load_state_dict(data["model"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{path}: weights do not fit the model its config describes ({first})") from None
    palette = data.get("palette")
    return LoadedModel(net.eval(), what, cfg, class_names, palette, path)
