"""Tiny stand-in networks and checkpoints for the export/infer tests (shared by both conftests).

The stand-ins honour the real builders' contracts (``forward(x) -> [B, 1+C, h, w]`` logits;
``maps(x, tags) -> {cam, iscam, aeiscam}`` at stride 16) and are registered in
``aesipe.export.sources.BUILDERS``, so exports go through the real checkpoint-loading path.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aesipe.config import RunConfig, to_dict

CLASSES = ["background", "cat", "dog", "car"]
_cache: dict[tuple, Path] = {}


class TinySegmenter(nn.Module):
    """Stride-4 logits (so the graph's resize-to-input path is exercised)."""

    def __init__(self, num_foreground: int):
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.head = nn.Conv2d(8, num_foreground + 1, 1)

    def forward(self, x):
        return self.head(F.relu(self.body(x)))


class TinyAesipe(nn.Module):
    """Stride-16 class maps normalised like CAMs; channel 0 = 1 - max foreground."""

    def __init__(self, num_foreground: int):
        super().__init__()
        self.features = nn.Conv2d(3, 8, 16, stride=16)
        self.classifier = nn.Conv2d(8, num_foreground, 1, bias=False)

    def maps(self, x, labels, flip: bool = False):
        if flip:  # a stand-in for the network's flip fusion: the mirror's activations summed in
            both = F.relu(self.classifier(F.relu(self.features(torch.cat([x, x.flip(-1)])))))
            cam = F.relu(both[: len(x)] + both[len(x):].flip(-1))
        else:
            cam = F.relu(self.classifier(F.relu(self.features(x))))
        cam = cam / (cam.amax(dim=(2, 3), keepdim=True) + 1e-5) * labels[:, :, None, None]
        full = torch.cat([1 - cam.amax(dim=1, keepdim=True), cam], dim=1)
        return {"cam": full, "iscam": full.sqrt(), "aeiscam": full ** 2}


def tiny_config() -> RunConfig:
    """One test-time scale (the stand-in's 16-px kernel needs inputs of 16 px or more), PAMR per scale."""
    cfg = RunConfig()
    model = dataclasses.replace(cfg.model, pamr_iters=2, pamr_dilations=(1, 2), pamr_backend="reference")
    cam = dataclasses.replace(cfg.cam, scales=(1.0,), flip=False, pamr="per_scale")
    return dataclasses.replace(cfg, model=model, cam=cam)


@contextlib.contextmanager
def builders_replaced(builders: dict):
    """``builders`` (checkpoint kind -> ``(cfg, num_foreground) -> nn.Module``) replace export's builders only
    inside the block: the registry is global, and other folders' tests (the demo's export) need the real ones."""
    from aesipe.export import sources

    saved = dict(sources.BUILDERS)
    sources.BUILDERS.update(builders)
    try:
        yield
    finally:
        sources.BUILDERS.clear()
        sources.BUILDERS.update(saved)


def builders_installed():
    """The tiny stand-ins for ``deeplabv3``/``aesipe`` checkpoints (a ``builders_replaced`` block)."""
    return builders_replaced({"deeplabv3": lambda cfg, c: TinySegmenter(c), "aesipe": lambda cfg, c: TinyAesipe(c)})


def save_checkpoint(path: Path, kind: str, net: nn.Module, cfg: RunConfig | None = None,
                    classes=CLASSES) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "aesipe-checkpoint", "version": 1, "kind": kind, "model": net.state_dict(),
                "config": to_dict(cfg or tiny_config()), "class_names": list(classes), "step": 1, "epoch": 1,
                "aesipe_version": "0.1.0"}, path)
    return path


def make_run(root: Path) -> Path:
    """A run directory with seg/final.pt and stage1/final.pt holding seeded tiny networks."""
    torch.manual_seed(0)
    save_checkpoint(root / "seg" / "final.pt", "deeplabv3", TinySegmenter(len(CLASSES) - 1))
    save_checkpoint(root / "stage1" / "final.pt", "aesipe", TinyAesipe(len(CLASSES) - 1))
    return root


def exported(base: Path, what: str, fmt: str) -> Path:
    """Export (once per session) the tiny run's ``what`` model to ``fmt``."""
    from aesipe.export.api import export_model

    key = (str(base), what, fmt)
    if key not in _cache:
        run = base / "run"
        if not (run / "seg" / "final.pt").exists():
            make_run(run)
        suffix = ".onnx" if fmt == "onnx" else ".pt"
        with builders_installed():
            _cache[key] = export_model(run, base / f"{what}{suffix}", format=fmt, what=what, log=lambda m: None)
    return _cache[key]


def smooth_rgb(height: int, width: int, seed: int = 0):
    """A photo-like (smooth) random uint8 RGB image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8))
    return np.asarray(coarse.resize((width, height), Image.Resampling.BILINEAR))


# Fixtures shared by tests/export and tests/infer (each conftest re-exports them): the tiny models are
# exported once per session whichever folder asks first.
@pytest.fixture(autouse=True)
def tiny_builders():
    with builders_installed():
        yield


@pytest.fixture(scope="session")
def export_base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "tiny_exports"


@pytest.fixture(scope="session")
def seg_onnx(export_base) -> Path:
    return exported(export_base, "segmenter", "onnx")


@pytest.fixture(scope="session")
def seg_torchscript(export_base) -> Path:
    return exported(export_base, "segmenter", "torchscript")


@pytest.fixture(scope="session")
def pl_onnx(export_base) -> Path:
    return exported(export_base, "pseudo_labeller", "onnx")
