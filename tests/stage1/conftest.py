"""Tiny synthetic data and run settings for the stage-1 tests (CPU, random init, seconds per test)."""
from __future__ import annotations

from pathlib import Path

import pytest

from aesipe.config import RunConfig, load_config


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Label caches go to the test's own folder, never ~/.cache."""
    monkeypatch.setenv("AESIPE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from aesipe.data.synth import generate

    return generate(tmp_path_factory.mktemp("synth"), num_train=6, num_val=3, size=48, seed=0,
                    num_classes=3, image_format="png", progress=False)


def tiny_overrides(root: Path, backbone: str = "mobilenet_v2", **extra) -> list[str]:
    """A run small enough for 2 shared CPU cores: 48 px crops, batch 2, random init."""
    settings = {
        "data.root": str(root), "data.train_split": "train", "data.cam_split": "val", "data.workers": 0,
        "model.backbone": backbone, "model.no_pretrained": "true",
        "model.pamr_backend": "reference",  # no op-library build inside the tests
        "train.batch_size": 2, "train.crop_size": 48, "train.resize_long": "40,56",
        "train.max_steps": 4, "train.checkpoint_every": 2, "train.log_every": 1, "runtime.device": "cpu",
        "cam.scales": "1.0,0.5",
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]


@pytest.fixture
def make_overrides(synth_root):
    """``make_overrides(backbone=..., **{"train.seed": 3})`` -> dotted overrides for the CLI."""
    return lambda backbone="mobilenet_v2", **extra: tiny_overrides(synth_root, backbone, **extra)


@pytest.fixture
def make_cfg(synth_root):
    """``make_cfg(run_dir, backbone=..., **{"train.seed": 3})`` -> a tiny RunConfig."""

    def build(run_dir: Path, backbone: str = "mobilenet_v2", **extra) -> RunConfig:
        return load_config(RunConfig, None, [f"run_dir={run_dir}", *tiny_overrides(synth_root, backbone, **extra)])

    return build
