"""Tiny synthetic data and tiny configs for the stage 2-3 and pipeline tests (real stages, tiny sizes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# Every stage at toy size: random-init MobileNetV2s, 48-px crops, one or two optimiser steps.
TINY_OVERRIDES = [
    "data.kind=folder", "data.train_split=train", "data.cam_split=train", "data.eval_split=val", "data.workers=0",
    "model.backbone=mobilenet_v2", "model.no_pretrained=true",
    "train.max_steps=2", "train.batch_size=4", "train.crop_size=48", "train.resize_long=40,56",
    "train.checkpoint_every=1", "train.log_every=1", "runtime.device=cpu",
    "cam.scales=1.0", "crf.workers=1", "ir_label.workers=1",
    "irn.backbone=mobilenet_v2", "irn.no_pretrained=true", "irn.crop_size=48", "irn.path_radius=4",
    "irn.batch_size=4", "irn.max_steps=2", "irn.checkpoint_every=1", "irn.log_every=1",
    "seg.backbone=mobilenet_v2", "seg.no_pretrained=true", "seg.crop_size=48", "seg.batch_size=4",
    "seg.max_steps=2", "seg.checkpoint_every=1", "seg.log_every=1",
]  # fmt: skip
TINY_SYNTH = {"num_train": 10, "num_val": 4, "size": 48, "num_classes": 3}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from aesipe.data.synth import generate

    root = tmp_path_factory.mktemp("synth") / "data"
    return generate(root, TINY_SYNTH["num_train"], TINY_SYNTH["num_val"], TINY_SYNTH["size"], 0,
                    TINY_SYNTH["num_classes"], progress=False)  # fmt: skip


def _tiny_config(run_dir: Path, data_root: Path, *extra: str):
    from aesipe.train.runconfig import resolve_run_config

    return resolve_run_config(run_dir, None, [*TINY_OVERRIDES, f"data.root={data_root}", *extra], save=True)


def _fake_cams(cfg, split: str) -> Path:
    """make-cam-style npz files from the ground truth (smoothed one-hot maps of the image's classes)."""
    from aesipe.data import open_dataset
    from aesipe.utils.atomic import atomic_save

    ds = open_dataset(cfg.data, split)
    out = Path(cfg.run_dir) / "cams" / split
    out.mkdir(parents=True, exist_ok=True)
    for image_id in ds.ids:
        mask = ds.load_mask(image_id)
        classes = np.concatenate([[0], np.flatnonzero(ds.labels(image_id)) + 1]).astype(np.int64)
        maps = np.stack([(mask == c).astype(np.float32) * 0.9 + 0.05 for c in classes])
        record = {"classes": classes, "maps": maps.astype(np.float16), "cam": maps[1:].astype(np.float16)}
        atomic_save(out / f"{image_id}.npz", lambda handle, record=record: np.savez(handle, **record))
    return out


def _labels_from_masks(cfg, split: str, folder: str, unsure_border: bool = False) -> Path:
    """Ground-truth masks copied as a run's label folder (optionally with 255 = unsure object borders)."""
    from aesipe.data import open_dataset
    from aesipe.utils.labelpng import save_label_png

    ds = open_dataset(cfg.data, split)
    out = Path(cfg.run_dir) / folder / split
    out.mkdir(parents=True, exist_ok=True)
    for image_id in ds.ids:
        mask = ds.load_mask(image_id).copy()
        if unsure_border:
            shifted = np.roll(mask, 2, axis=1)
            mask[(shifted != mask)] = 255
        save_label_png(out / f"{image_id}.png", np.where(mask == 255, 255 if unsure_border else 0, mask), ds.palette)
    return out


@pytest.fixture
def run_dir(tmp_path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


# The helpers as fixtures (test modules cannot import this conftest under --import-mode=importlib).
@pytest.fixture(scope="session")
def tiny_config():
    return _tiny_config


@pytest.fixture(scope="session")
def fake_cams():
    return _fake_cams


@pytest.fixture(scope="session")
def labels_from_masks():
    return _labels_from_masks


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    return list(TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_synth() -> dict:
    return dict(TINY_SYNTH)
