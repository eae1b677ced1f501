"""Stages 2-3 run alone on tiny synthetic data: IRN, make-seg-labels, seg (+ resume), eval-seg, errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aesipe.train.cli import app
from aesipe.utils.labelpng import load_label_png

runner = CliRunner()


def _steps(log: Path) -> list[int]:
    with log.open() as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


def test_irn_trains_resumes_and_feeds_the_random_walk(run_dir, tiny_data, tiny_config, fake_cams, labels_from_masks):
    from aesipe.data import open_dataset
    from aesipe.train.stages.irn import train_irn
    from aesipe.train.stages.random_walk import make_seg_labels

    cfg = tiny_config(run_dir, tiny_data, "irn.max_steps=1")
    labels_from_masks(cfg, "train", "ir_labels", unsure_border=True)
    final = train_irn(cfg)
    state = torch.load(final, weights_only=False)
    assert state["kind"] == "irn" and state["step"] == 1 and "optimizer" not in state
    cfg = tiny_config(run_dir, tiny_data, "irn.max_steps=2")
    train_irn(cfg)  # resumes from checkpoints/last.pt at step 1
    assert torch.load(final, weights_only=False)["step"] == 2
    assert _steps(run_dir / "irn" / "log.csv") == [1, 2]

    fake_cams(cfg, "train")
    out = make_seg_labels(cfg, "train", progress=False)
    ds = open_dataset(cfg.data, "train")
    for image_id in ds.ids:
        labels = load_label_png(out / f"{image_id}.png")
        assert labels.shape == ds.load_mask(image_id).shape
        allowed = {0, *(np.flatnonzero(ds.labels(image_id)) + 1)}
        assert set(np.unique(labels)) <= allowed  # only the image's own classes
    # a second call keeps the finished files (resume) and a changed setting remakes them
    first = (out / f"{ds.ids[0]}.png").stat().st_mtime_ns
    make_seg_labels(cfg, "train", progress=False)
    assert (out / f"{ds.ids[0]}.png").stat().st_mtime_ns == first
    cfg = tiny_config(run_dir, tiny_data, "random_walk.method=dense")
    make_seg_labels(cfg, "train", progress=False)
    assert (out / f"{ds.ids[0]}.png").stat().st_mtime_ns != first


@pytest.mark.parametrize("background_threshold", [None, 0.3])
def test_walk_labels_follow_a_boundary_map(background_threshold):
    # Noisy maps of a rectangle + an edge map that marks its border: the walk restores the rectangle.
    from aesipe.config import RandomWalkConfig
    from aesipe.train.stages.random_walk import labels_from_walk

    height, width = 45, 62  # odd sizes: the x4 upsampling is cropped back to the image
    mask = np.zeros((height, width), np.uint8)
    mask[8:36, 14:50] = 3
    rng = np.random.default_rng(0)
    classes = np.array([0, 3])
    maps = np.stack([(mask == c) * 0.8 + 0.1 for c in classes]).astype(np.float32)
    noisy = maps.copy()
    noisy[1, 20:28, 20:30] = 0.05  # a hole in the object's map ...
    noisy[1, 0:6, 0:8] = 0.7  # ... and a false positive in the background
    noisy += rng.uniform(0, 0.05, noisy.shape).astype(np.float32)
    edge = np.zeros(((height + 3) // 4, (width + 3) // 4), np.float32)
    edge[2, 3:13] = edge[8, 3:13] = 1.0  # the rectangle's border at stride 4
    edge[2:9, 3] = edge[2:9, 12] = 1.0
    rw = RandomWalkConfig(background_threshold=background_threshold)
    labels = labels_from_walk(noisy, classes, torch.from_numpy(edge), rw)
    assert labels.shape == (height, width) and set(np.unique(labels)) <= {0, 3}
    inside = labels[12:32, 18:46]
    assert (inside == 3).mean() > 0.95  # the hole is filled
    assert (labels[0:6, 0:8] == 0).mean() > 0.95  # the false positive is gone


def test_walk_scales_the_background_map_when_asked():
    # No edges and one short walk step, so the maps stay apart: the class wins where its map beats the background (x the scale).
    from aesipe.config import RandomWalkConfig
    from aesipe.train.stages.random_walk import labels_from_walk

    classes = np.array([0, 2])
    maps = np.stack([np.full((16, 20), 0.5), np.tile(np.linspace(0.2, 0.8, 20), (16, 1))]).astype(np.float32)
    edge = torch.zeros(4, 5)  # no boundary anywhere
    # the background map walks too (with a threshold it would be unused)
    rw = RandomWalkConfig(background_threshold=None, exp_times=0, radius=2)
    plain = labels_from_walk(maps, classes, edge, rw)
    scaled = labels_from_walk(maps, classes, edge, rw, background_scale=1.3)
    assert 0 < (scaled == 2).sum() < (plain == 2).sum()  # a stronger background takes pixels from the class
    assert np.array_equal(labels_from_walk(maps, classes, edge, rw, background_scale=1.0), plain)


def test_seg_trains_resumes_and_evaluates(run_dir, tiny_data, tiny_config, labels_from_masks):
    from aesipe.train.stages.seg import train_seg

    cfg = tiny_config(run_dir, tiny_data, "seg.max_steps=1")
    labels_from_masks(cfg, "train", "seg_labels")
    train_seg(cfg)
    first = torch.load(run_dir / "seg" / "checkpoints" / "last.pt", weights_only=False)
    assert first["step"] == 1 and "rng" in first
    cfg = tiny_config(run_dir, tiny_data, "seg.max_steps=2")
    final = torch.load(train_seg(cfg), weights_only=False)
    assert final["kind"] == "deeplabv3" and final["step"] == 2
    assert final["class_names"][0] == "background" and final["config"]["seg"]["max_steps"] == 2
    assert _steps(run_dir / "seg" / "log.csv") == [1, 2]

    result = runner.invoke(app, ["eval-seg", str(run_dir), "seg.test_scales=0.75,1.0", "seg.test_flip=true"])
    assert result.exit_code == 0, result.output
    assert "mean" in result.output
    saved = json.loads((run_dir / "seg_eval.json").read_text())
    assert saved["split"] == "val" and saved["test_flip"] is True and 0 <= saved["miou"] <= 1
    assert saved["test_scales"] == [0.75, 1.0] and len(saved["confusion"]) == 4


def test_eval_seg_with_crf(run_dir, tiny_data, tiny_config, labels_from_masks):
    pytest.importorskip("pydensecrf.densecrf")
    from aesipe.train.stages.seg import train_seg
    from aesipe.train.stages.seg_eval import evaluate_segmenter

    cfg = tiny_config(run_dir, tiny_data, "seg.max_steps=1", "seg.test_crf=true")
    labels_from_masks(cfg, "train", "seg_labels")
    train_seg(cfg)
    result = evaluate_segmenter(cfg, progress=False)
    assert result["test_crf"] is True and result["num_images"] == 4


def test_probability_crf_follows_colour_edges():
    pytest.importorskip("pydensecrf.densecrf")
    from aesipe.config import CrfConfig
    from aesipe.crf import crf_from_probabilities

    image = np.zeros((40, 40, 3), np.uint8)
    image[:, 20:] = (220, 40, 40)  # a red right half
    probs = np.zeros((2, 40, 40), np.float32)
    probs[1, :, 14:] = 0.6  # the network's class-1 region spills 6 px over the colour edge
    probs[0] = 1 - probs[1]
    probs[1, :, :14] = 0.05
    probs[0, :, :14] = 0.95
    refined = crf_from_probabilities(image, probs, CrfConfig())
    assert (refined[:, 14:18] == 0).mean() > 0.9  # pulled back to the colour edge
    assert (refined[:, 22:] == 1).mean() > 0.9


@pytest.mark.parametrize(
    "command, needs",
    [
        (["irn"], "aesipe-train ir-label"),
        (["make-seg-labels"], "aesipe-train make-cam"),
        (["seg"], "aesipe-train make-seg-labels"),
        (["eval-seg"], "aesipe-train seg"),
    ],
)
def test_missing_inputs_name_the_stage_to_run(run_dir, tiny_data, tiny_config, command, needs):
    tiny_config(run_dir, tiny_data)  # saves config.toml: the commands need nothing retyped
    result = runner.invoke(app, [*command, str(run_dir)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("aesipe-train: error:") and needs in lines[0]
    assert "Traceback" not in result.output


def test_make_seg_labels_needs_irn_after_cams(run_dir, tiny_data, tiny_config, fake_cams):
    cfg = tiny_config(run_dir, tiny_data)
    fake_cams(cfg, "train")
    result = runner.invoke(app, ["make-seg-labels", str(run_dir)])
    assert result.exit_code == 2 and "aesipe-train irn" in result.output


def test_ir_label_command_end_to_end(run_dir, tiny_data, tiny_config, fake_cams):
    pytest.importorskip("pydensecrf.densecrf")
    cfg = tiny_config(run_dir, tiny_data)
    fake_cams(cfg, "train")
    result = runner.invoke(app, ["ir-label", str(run_dir)])
    assert result.exit_code == 0, result.output
    pngs = sorted((run_dir / "ir_labels" / "train").glob("*.png"))
    assert len(pngs) == 10
    values = set(np.unique(np.concatenate([load_label_png(p).ravel() for p in pngs])))
    assert 0 in values and values - {0, 255}  # background and some classes
