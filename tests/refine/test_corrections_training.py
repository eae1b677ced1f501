"""Reviewed masks in training: the segmenter's labels, the IR labels, the review queue (tiny synthetic runs)."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from aesipe.corrections import CorrectionStore
from aesipe.utils.labelpng import IGNORE_INDEX, load_label_png


def _correct(cfg, ds, ids, edit=True) -> dict[str, np.ndarray]:
    """Store a reviewed mask for ``ids``: the true mask with a 6x6 square of void (255) and one of class 1."""
    masks = {}
    for image_id in ids:
        mask = ds.load_mask(image_id).copy()
        if edit:
            mask[:6, :6] = IGNORE_INDEX
            mask[-6:, -6:] = 1
        masks[image_id] = mask
    CorrectionStore.of_run(cfg.run_dir).apply(masks, {"source": "test", "kind": "png", "items": {}}, ds.class_names,
                                              ds.palette)
    return masks


def test_seg_samples_use_the_reviewed_mask_and_repeat_it(run_dir, tiny_data, tiny_config, labels_from_masks):
    from aesipe.data import open_dataset
    from aesipe.data.transforms import SegTrainDataset

    cfg = tiny_config(run_dir, tiny_data)
    ds = open_dataset(cfg.data, "train")
    folder = labels_from_masks(cfg, "train", "seg_labels")
    for image_id in ds.ids:  # pseudo-labels that are all background: any class in a sample is the reviewer's
        from aesipe.utils.labelpng import save_label_png

        save_label_png(folder / f"{image_id}.png", np.zeros_like(ds.load_mask(image_id)), ds.palette)
    masks = _correct(cfg, ds, ds.ids[:2])
    corrected = CorrectionStore.of_run(cfg.run_dir).masks_for(ds)
    dataset = SegTrainDataset(ds, folder, crop_size=48, scale_range=(1.0, 1.0), flip=False, jitter=0.0, seed=0,
                              corrected=corrected,
                              corrected_repeat=3)
    assert len(dataset) == len(ds) + 2 * 2
    assert [dataset.order.count(i) for i in ds.ids[:3]] == [3, 3, 1]
    for index in range(len(dataset)):
        sample = dataset[index]
        label = sample["label"].numpy()
        valid = sample["valid"].numpy() > 0
        if sample["id"] in masks:  # the reviewed mask, placed where the crop put the image
            assert np.isin(label[valid], np.unique(masks[sample["id"]])).all() and (label[valid] == 255).any()
        else:
            assert (label[valid] == 0).all()


def test_seg_trains_on_corrections(run_dir, tiny_data, tiny_config, labels_from_masks, capsys):
    from aesipe.data import open_dataset
    from aesipe.train.stages.seg import train_seg

    cfg = tiny_config(run_dir, tiny_data, "corrections.seg_repeat=2", "seg.max_steps=1")
    labels_from_masks(cfg, "train", "seg_labels")
    _correct(cfg, open_dataset(cfg.data, "train"), ["synth_00000"])
    assert train_seg(cfg).is_file()
    assert "seg: 1 of 10 images train on their reviewed masks (drawn 2x)" in capsys.readouterr().out


def test_ir_labels_of_corrected_images_are_their_masks(run_dir, tiny_data, tiny_config, fake_cams):
    pytest.importorskip("pydensecrf")
    from aesipe.data import open_dataset
    from aesipe.train.stages.ir_label import make_ir_labels

    cfg = tiny_config(run_dir, tiny_data)
    fake_cams(cfg, "train")
    out = make_ir_labels(cfg, "train", progress=False)
    ds = open_dataset(cfg.data, "train")
    before = {i: load_label_png(out / f"{i}.png") for i in ds.ids}
    masks = _correct(cfg, ds, ds.ids[:2])
    make_ir_labels(cfg, "train", progress=False)  # the corrections change the folder's settings: remade
    for image_id in ds.ids:
        labels = load_label_png(out / f"{image_id}.png")
        expected = masks[image_id] if image_id in masks else before[image_id]
        assert np.array_equal(labels, expected), image_id
    cfg = tiny_config(run_dir, tiny_data, "corrections.ir_labels=false")  # the switch: the CRF's labels again
    make_ir_labels(cfg, "train", progress=False)
    assert all(np.array_equal(load_label_png(out / f"{i}.png"), before[i]) for i in ds.ids)


def test_review_queue_ranks_uncorrected_images_and_links_the_first(run_dir, tiny_data, tiny_config, fake_cams):
    from typer.testing import CliRunner

    from aesipe.data import open_dataset
    from aesipe.train.cli import app
    from aesipe.utils.atomic import atomic_save

    cfg = tiny_config(run_dir, tiny_data)
    cams = fake_cams(cfg, "train")
    ds = open_dataset(cfg.data, "train")
    # One image's maps hesitate everywhere (two classes equally strong): it must lead the queue.
    unsure = ds.ids[3]
    with np.load(cams / f"{unsure}.npz") as data:
        record = {k: data[k] for k in data.files}
    record["maps"] = np.full_like(record["maps"], 0.5)
    atomic_save(cams / f"{unsure}.npz", lambda handle: np.savez(handle, **record))
    _correct(cfg, ds, ds.ids[:1], edit=False)
    result = CliRunner().invoke(app, ["review-queue", str(run_dir), "--n", "3"])
    assert result.exit_code == 0, result.output
    with (run_dir / "review_queue.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["image"] for r in rows][0] == unsure
    assert len(rows) == len(ds) - 1 and ds.ids[0] not in {r["image"] for r in rows}  # corrected: not queued
    links = sorted((run_dir / "review_queue").iterdir())
    assert [p.name for p in links] == sorted(f"{r['image']}.jpg" for r in rows[:3])
    assert all(os.path.samefile(p, ds.image_path(p.stem)) for p in links)


def test_class_coverage_spreads_the_first_picks():
    from aesipe.train.corrections.queue import cover_classes

    rows = [{"image": f"a{i}", "score": 0.9 - i * 0.01, "tags": "cow"} for i in range(3)]
    rows.append({"image": "b", "score": 0.6, "tags": "sheep"})
    picked = [r["image"] for r in cover_classes(rows, 3)]
    assert picked == ["a0", "b", "a1", "a2"]  # 0.6 > 0.89 / 2: the sheep comes before a second cow
