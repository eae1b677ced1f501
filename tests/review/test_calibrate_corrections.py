"""calibrate judges the background scale on the run's reviewed masks: a dataset without masks can be calibrated."""
from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from aesipe.corrections import CorrectionStore
from aesipe.data import open_dataset
from aesipe.utils.atomic import atomic_save
from aesipe.utils.errors import UserError


@pytest.fixture
def maskless_run(tmp_path, review_data):
    """The review data without its masks, and CAMs that are right at background x0.72-1.28 (object 0.9 inside,
    0.5 outside, background 0.7): the best of 0.5 / 1.0 / 1.5 on the true masks is 1.0."""
    from aesipe.train.runconfig import resolve_run_config

    data = tmp_path / "data"
    shutil.copytree(review_data, data, ignore=shutil.ignore_patterns("SegmentationClass"))
    cfg = resolve_run_config(tmp_path / "run", None, [f"data.root={data}", "data.kind=folder",
                                                      "data.train_split=train", "data.cam_split=train"], save=True)
    truth = open_dataset(_with_root(cfg, review_data).data, "train")
    folder = tmp_path / "run" / "cams" / "train"
    for image_id in truth.ids:
        mask = truth.load_mask(image_id)
        classes = np.concatenate([[0], np.flatnonzero(truth.labels(image_id)) + 1]).astype(np.int64)
        maps = np.stack([np.full(mask.shape, 0.7, np.float32)]
                        + [np.where(mask == c, 0.9, 0.5).astype(np.float32) for c in classes[1:]])
        atomic_save(folder / f"{image_id}.npz", lambda h, m=maps, c=classes: np.savez(h, classes=c, maps=m.astype(np.float16)))
    return cfg, truth


def _with_root(cfg, root):
    return replace(cfg, data=replace(cfg.data, root=str(root)))


def _correct(cfg, truth, masks):
    CorrectionStore.of_run(cfg.run_dir).apply(masks, {"source": "t", "kind": "png", "items": {}}, truth.class_names,
                                              truth.palette)


def test_calibration_runs_on_corrected_images_alone(maskless_run):
    from aesipe.train.stages.calibrate import calibrate

    cfg, truth = maskless_run
    with pytest.raises(UserError, match="has a mask"):
        calibrate(cfg, "train", images=4, scales=[0.5, 1.0, 1.5], progress=False)
    ids = truth.ids[:3]
    _correct(cfg, truth, {i: truth.load_mask(i) for i in ids})
    calibrated, record = calibrate(cfg, "train", images=4, scales=[0.5, 1.0, 1.5], progress=False)
    assert record["images"] == ids and record["corrected_images"] == ids
    assert calibrated.cam.background_scale == 1.0


def test_the_corrected_mask_is_what_is_judged(maskless_run):
    from aesipe.train.stages.calibrate import calibrate

    cfg, truth = maskless_run
    # A reviewer who says every pixel is the object: only x0.5 (object wins everywhere) agrees.
    image_id = truth.ids[0]
    first_class = int(np.flatnonzero(truth.labels(image_id))[0]) + 1
    _correct(cfg, truth, {image_id: np.full_like(truth.load_mask(image_id), first_class)})
    calibrated, _ = calibrate(cfg, "train", images=1, scales=[0.5, 1.0, 1.5], progress=False)
    assert calibrated.cam.background_scale == 0.5
    off = replace(cfg, corrections=replace(cfg.corrections, calibrate=False))
    with pytest.raises(UserError, match="has a mask"):  # the switch off: the corrections are not masks
        calibrate(off, "train", images=1, scales=[0.5, 1.0, 1.5], progress=False)
