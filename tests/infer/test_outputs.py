"""What a reviewer gets besides the masks: confidence maps and review.csv, COCO and CVAT files, --classes,
the Labeler's scores, and one line for every new mistake."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from typer.testing import CliRunner

from aesipe.infer import Labeler
from aesipe.infer.cli import app
from aesipe.utils.labelpng import load_label_png

colour = sys.modules["aesipe_tests_colour_model"]  # loaded by conftest.py
runner = CliRunner()


def _label(*args):
    return runner.invoke(app, [str(a) for a in args])


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())["images"]


def _graph_scores(model: Path, rgb: np.ndarray, tags: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """The file's ``scores`` for one image, by the plain client recipe (numpy + onnxruntime, no aesipe)."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    fmt, (h, w) = json.loads(meta["input_format"]), rgb.shape[:2]
    div = fmt["size_divisor"] or 1
    x = np.empty((1, 3, -(-h // div) * div, -(-w // div) * div), np.float32)
    x[:] = np.array(fmt["pad_value"], np.float32)[None, :, None, None]
    x[0, :, :h, :w] = rgb.transpose(2, 0, 1) / np.float32(255)
    feeds = {"image": x} if tags is None else {"image": x, "tags": tags[None].astype(np.float32)}
    return session.run(["scores"], feeds)[0][0, :, :h, :w].astype(np.float64), meta


def _close_u8(ours: np.ndarray, expected: np.ndarray) -> None:
    difference = np.abs(ours.astype(int) - np.rint(expected * 255).astype(int))
    assert difference.max() <= 1 and (difference == 0).mean() > 0.999  # rounding at exact .5 steps only


# ---- confidence -----------------------------------------------------------------------------------------------
def test_confidence_maps_are_the_softmax_of_the_written_class(colour_onnx, scenes, tmp_path):
    out = tmp_path / "out"
    result = _label(colour_onnx, scenes, out, "--confidence")
    assert result.exit_code == 0, result.output
    images = _report(out)
    for rel, record in images.items():
        mask = load_label_png(out / record["mask"])
        conf_png = Image.open(out / record["confidence"])
        conf = np.asarray(conf_png)
        assert conf_png.mode == "L" and conf.shape == mask.shape
        scores, _ = _graph_scores(colour_onnx, np.asarray(Image.open(scenes / rel).convert("RGB")))
        probs = np.exp(scores - scores.max(0)) / np.exp(scores - scores.max(0)).sum(0)
        assert (probs.argmax(0) == mask).mean() > 0.999
        _close_u8(conf, probs.max(0))
        assert record["mean_confidence"] == round(conf.mean() / 255, 4)
        assert record["uncertain_fraction"] == pytest.approx((conf / 255 < 0.5).mean(), abs=1e-6)
    with open(out / "review.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["image"] for r in rows][0] == "purple.png"  # half cat, half car: the reviewer starts there
    assert sorted(r["image"] for r in rows) == sorted(images)
    means = [float(r["mean_confidence"]) for r in rows]
    assert means == sorted(means) and [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[0]["uncertain_fraction"]) > 0.2 and rows[0]["confidence"] == "confidence/purple.png"


def test_pseudo_labeller_confidence_is_the_winning_share(pl_onnx, photo_folder, tmp_path):
    csv_path = tmp_path / "tags.csv"
    csv_path.write_text("image,labels\na,cat dog\nb.png,dog car\nsub/c,\nsub/d.webp,car\nsub/deeper/e,dog cat car\n")
    out = tmp_path / "out"
    assert _label(pl_onnx, photo_folder, out, "--tags", csv_path, "--confidence").exit_code == 0
    tags = {"a.jpg": [1, 2], "b.png": [2, 3], "sub/c.JPG": [], "sub/d.webp": [3], "sub/deeper/e.bmp": [1, 2, 3]}
    for rel, record in _report(out).items():
        rgb = np.asarray(Image.open(photo_folder / rel).convert("RGB"))
        vector = np.zeros(3)
        vector[[t - 1 for t in tags[rel]]] = 1
        scores, meta = _graph_scores(pl_onnx, rgb, vector)
        maps = scores / (scores.max(axis=(1, 2), keepdims=True) + 1e-5)
        kept = maps[[0, *tags[rel]]]
        kept[0] *= float(meta["background_scale"])
        share = kept.max(0) / kept.sum(0)
        _close_u8(np.asarray(Image.open(out / record["confidence"])), share)


def test_a_rerun_asking_for_confidence_redoes_the_masks_without_it(seg_onnx, photo_folder, tmp_path):
    out = tmp_path / "out"
    assert _label(seg_onnx, photo_folder, out).exit_code == 0
    result = _label(seg_onnx, photo_folder, out, "--confidence")
    assert result.exit_code == 0 and "(redone: 5 without a confidence map)" in result.output, result.output
    first = _report(out)
    assert len(list((out / "confidence").rglob("*.png"))) == 5
    (out / "report.json").unlink()  # a killed run's report: the kept masks' numbers come back from the maps
    again = _label(seg_onnx, photo_folder, out, "--confidence")
    assert "5 masks still valid, 0 to label" in again.output
    second = _report(out)
    for rel in first:
        assert second[rel]["mean_confidence"] == first[rel]["mean_confidence"] and second[rel]["resumed"]
    changed = _label(seg_onnx, photo_folder, out, "--flip")  # new masks: their old maps must not stay
    assert changed.exit_code == 0 and not list((out / "confidence").rglob("*.png"))
    assert "mean_confidence" not in _report(out)["a.jpg"]


# ---- formats ---------------------------------------------------------------------------------------------------
def test_coco_round_trip_is_exact(colour_onnx, scenes, tmp_path):
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO

    out = tmp_path / "out"
    assert _label(colour_onnx, scenes, out, "--format", "coco").exit_code == 0
    document = json.loads((out / "annotations.json").read_text())
    assert document["categories"] == [{"id": 1, "name": "cat", "supercategory": ""},
                                      {"id": 2, "name": "dog", "supercategory": ""},
                                      {"id": 3, "name": "car", "supercategory": ""}]
    api = COCO(str(out / "annotations.json"))
    records = _report(out)
    assert sorted(i["file_name"] for i in document["images"]) == sorted(records)
    for image in document["images"]:
        mask = load_label_png(out / records[image["file_name"]]["mask"])
        assert (image["height"], image["width"]) == mask.shape
        rebuilt = np.zeros(mask.shape, np.uint8)
        for ann in api.loadAnns(api.getAnnIds(imgIds=[image["id"]])):
            assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0
            pixels = coco_mask.decode(ann["segmentation"])
            assert not (rebuilt[pixels == 1]).any()  # one class per pixel
            assert (api.annToMask(ann) == pixels).all() and ann["area"] == pixels.sum()
            ys, xs = np.nonzero(pixels)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            rebuilt[pixels == 1] = ann["category_id"]
        assert (rebuilt == mask).all(), image["file_name"]
    assert {a["category_id"] for a in document["annotations"]} == {1, 2, 3}


def test_cvat_segmentation_mask_layout(colour_onnx, scenes, tmp_path):
    out = tmp_path / "out"
    assert _label(colour_onnx, scenes, out).exit_code == 0
    result = _label(colour_onnx, scenes, out, "--format", "png,cvat,coco")  # kept masks: written from them
    assert result.exit_code == 0 and "4 masks still valid" in result.output and (out / "annotations.json").is_file()
    lines = (out / "labelmap.txt").read_text().splitlines()
    assert lines[0] == "# label:color_rgb:parts:actions" and lines[1] == "background:0,0,0::"
    colours = {tuple(int(v) for v in line.split(":")[1].split(",")): i for i, line in enumerate(lines[1:])}
    assert len(colours) == 4
    names = (out / "ImageSets" / "Segmentation" / "default.txt").read_text().split()
    assert names == ["plain", "purple", "street/one", "street/two"]
    for name in names:
        rgb = np.asarray(Image.open(out / "SegmentationClass" / f"{name}.png"))
        assert rgb.ndim == 3 and rgb.shape[2] == 3
        decoded = np.vectorize(lambda *c: colours[c])(rgb[..., 0], rgb[..., 1], rgb[..., 2])
        assert (decoded == load_label_png(out / "masks" / f"{name}.png")).all()


def test_coco_without_pycocotools_names_the_extra(seg_onnx, photo_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    result = _label(seg_onnx, photo_folder, tmp_path / "out", "--format", "coco")
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].endswith("pip install 'aesipe[coco]'"), lines


# ---- classes -----------------------------------------------------------------------------------------------------
def test_classes_restrict_the_output_and_join_the_fingerprint(colour_onnx, scenes, tmp_path):
    assert _label(colour_onnx, scenes, tmp_path / "all").exit_code == 0
    out = tmp_path / "some"
    assert _label(colour_onnx, scenes, out, "--classes", "cat,car").exit_code == 0
    for rel in ("street/one.png", "street/two.png"):
        full, some = load_label_png(tmp_path / "all" / "masks" / rel), load_label_png(out / "masks" / rel)
        assert set(np.unique(some)) <= {0, 1, 3} and (some[full == 2] == 0).all()  # dogs became background
        assert (some[full == 1] == 1).mean() > 0.99
    again = _label(colour_onnx, scenes, out)
    assert "4 made with other classes" in again.output


def test_labeler_returns_probabilities_and_labels_lists(colour_onnx, pl_onnx, scenes):
    rgb = np.asarray(Image.open(scenes / "street" / "one.png"))
    labeler = Labeler(colour_onnx)
    labels, probs = labeler.label(rgb, return_scores=True)
    assert probs.shape == (4, *rgb.shape[:2]) and probs.dtype == np.float32
    assert np.allclose(probs.sum(0), 1, atol=1e-5) and (probs.argmax(0) == labels).all()
    assert (labels == labeler.label(rgb)).all()
    images = [rgb, rgb[:64, :100], scenes / "purple.png", rgb]
    many = labeler.label_many(images, batch_size=2)
    assert all((m == labeler.label(i)).all() for m, i in zip(many, images))
    restricted, kept = Labeler(colour_onnx, classes=["dog"]).label(rgb, return_scores=True)
    assert set(np.unique(restricted)) <= {0, 2} and not kept[[1, 3]].any()
    pseudo = Labeler(pl_onnx)
    (pl_labels, pl_probs), = pseudo.label_many([rgb], tags=[["cat"]], return_scores=True)
    assert not pl_probs[[2, 3]].any() and (pl_probs.argmax(0) == pl_labels).all()
    with pytest.raises(Exception, match="one entry per image"):
        pseudo.label_many([rgb, rgb], tags=[["cat"]])


# ---- mistakes: one line, exit 2, nothing processed ----------------------------------------------------------------
@pytest.mark.parametrize("pseudo, args, message", [
    (False, ["--format", "xml"], "--format must be png, coco, cvat or labelstudio"),
    (False, ["--tile", "8"], "--tile must be at least 32"),
    (False, ["--tile", "64", "--tile-overlap", "0.95"], "--tile-overlap must lie in [0, 0.9]"),
    (False, ["--tile-overlap", "0.5"], "--tile-overlap needs --tile SIZE"),
    (False, ["--tile", "64", "--scales", "1.0,0.5"], "--tile runs at scale 1.0"),
    (False, ["--tile", "64", "--crf"], "drop --crf"),
    (False, ["--classes", "kat,dog"], "unknown class 'kat' (did you mean 'cat'?)"),
    (False, ["--classes", " , "], "--classes needs class names"),
    (True, ["--tile", "64"], "--tile is for segmenters"),
    (True, ["--classes", "cat"], "--classes is for segmenters"),
])
def test_new_mistakes_end_in_one_line_before_any_work(seg_onnx, pl_onnx, photo_folder, tmp_path, pseudo, args, message):
    tags = tmp_path / "tags.csv"
    tags.write_text("image,labels\na,cat\n")
    model = [pl_onnx, photo_folder, tmp_path / "out", "--tags", tags] if pseudo else [seg_onnx, photo_folder, tmp_path / "out"]
    result = _label(*model, *args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("aesipe-label: error:") and message in lines[0], lines
    assert not (tmp_path / "out" / "masks").exists()


def test_cvat_refuses_a_palette_that_repeats_a_colour():
    from aesipe.infer.companions import check_cvat_palette
    from aesipe.utils.errors import UserError

    palette = np.array([[0, 0, 0], [10, 20, 30], [10, 20, 30]], np.uint8)
    with pytest.raises(UserError, match="'cat' and 'dog' share the colour"):
        check_cvat_palette(("background", "cat", "dog"), palette)


def test_pseudo_labeller_batches_only_images_with_the_same_tags(pl_onnx, scenes):
    rgb = np.asarray(Image.open(scenes / "street" / "one.png"))
    pseudo = Labeler(pl_onnx)
    calls = []
    run = pseudo.model.run

    def recording_run(image, tags, want):
        calls.append(tags.copy())
        return run(image, tags, want)

    pseudo.model.run = recording_run
    tags = [["cat"], ["dog"], ["cat"], ["cat", "dog"], ["dog"]]
    many = pseudo.label_many([rgb] * len(tags), tags=tags, batch_size=4)
    # Same size, so a segmenter would make one call of 4 and one of 1; mixed tags would make the graph
    # refine their union (more PAMR work), so each call holds one tag set.
    assert sorted(len(c) for c in calls) == [1, 2, 2]
    assert all((c == c[:1]).all() for c in calls)
    calls.clear()
    assert all((m == pseudo.label(rgb, tags=t)).all() for m, t in zip(many, tags))
