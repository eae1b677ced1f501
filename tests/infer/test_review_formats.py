"""aesipe-label for the review loop: --format labelstudio (tasks with pre-annotations, the labelling config,
image references) and --reviewed (a person's masks copied through, never relabelled)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aesipe.corrections import CorrectionStore
from aesipe.infer import Labeler
from aesipe.infer.cli import app
from aesipe.labelstudio_rle import decode_mask
from aesipe.utils.labelpng import load_label_png

runner = CliRunner()


def _label(*args):
    return runner.invoke(app, [str(a) for a in args])


def _tasks(out: Path) -> dict[str, dict]:
    return {t["data"]["aesipe_image"]: t for t in json.loads((out / "labelstudio_tasks.json").read_text())}


def _painted(task: dict, classes) -> np.ndarray:
    """The task's pre-annotation as a label map (our decoder)."""
    results = task["predictions"][0]["result"]
    height, width = results[0]["original_height"], results[0]["original_width"]
    labels = np.zeros((height, width), np.uint8)
    for result in results:
        labels[decode_mask(result["value"]["rle"], height, width)] = classes.index(result["value"]["brushlabels"][0])
    return labels


def test_labelstudio_tasks_hold_the_masks_scores_and_model(colour_onnx, scenes, tmp_path):
    out = tmp_path / "out"
    result = _label(colour_onnx, scenes, out, "--format", "labelstudio")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    classes = list(Labeler(colour_onnx).info.classes)
    tasks = _tasks(out)
    assert sorted(tasks) == sorted(report["images"])
    for rel, record in report["images"].items():
        task = tasks[rel]
        prediction = task["predictions"][0]
        assert prediction["score"] == record["mean_confidence"]  # --format labelstudio turned confidence on
        assert prediction["model_version"] == f"{colour_onnx.name}@{report['summary']['model_sha256_16']}"
        assert task["data"]["image"] == "/data/local-files/?d=" + rel
        mask = load_label_png(out / record["mask"])
        if mask.any():
            assert np.array_equal(_painted(task, classes), mask)
        else:
            assert prediction["result"] == []
        assert {r["value"]["brushlabels"][0] for r in prediction["result"]} == {classes[v] for v in np.unique(mask) if v}
    config = (out / "labelstudio_config.xml").read_text()
    assert all(f'<Label value="{name}"' in config for name in classes[1:]) and f'"{classes[0]}"' not in config


def test_the_sdk_reads_our_pre_annotations(colour_onnx, scenes, tmp_path, labelstudio_sdk):
    out = tmp_path / "out"
    assert _label(colour_onnx, scenes, out, "--format", "labelstudio").exit_code == 0
    report = json.loads((out / "report.json").read_text())["images"]
    items, expected = [], []
    for rel, task in _tasks(out).items():
        mask = load_label_png(out / report[rel]["mask"])
        for result in task["predictions"][0]["result"]:
            value = Labeler(colour_onnx).info.classes.index(result["value"]["brushlabels"][0])
            items.append((result["value"]["rle"], *mask.shape))
            expected.append(np.where(mask == value, 255, 0))
    assert items
    for alpha, want in zip(labelstudio_sdk.decode(items), expected):
        assert np.array_equal(alpha, want)


def test_image_root_makes_urls_and_needs_the_format(colour_onnx, scenes, tmp_path):
    out = tmp_path / "out"
    result = _label(colour_onnx, scenes, out, "--format", "labelstudio", "--image-root", "https://host/my photos")
    assert result.exit_code == 0, result.output
    assert _tasks(out)["street/one.png"]["data"]["image"] == "https://host/my photos/street/one.png"
    bad = _label(colour_onnx, scenes, tmp_path / "other", "--image-root", "https://host")
    assert bad.exit_code == 2 and "--image-root is for --format labelstudio" in bad.output


def _store(folder: Path, model: Path, masks: dict[str, np.ndarray]) -> Path:
    info = Labeler(model).info
    CorrectionStore(folder).apply(masks, {"source": "review.json", "kind": "labelstudio", "items": {}}, info.classes,
                                  np.asarray(info.palette, np.uint8))
    return folder


def test_reviewed_masks_are_copied_through_and_never_relabelled(colour_onnx, scenes, tmp_path):
    out = tmp_path / "out"
    human = np.zeros((160, 240), np.uint8)
    human[10:50, 20:90] = 2
    store = _store(tmp_path / "run" / "corrections", colour_onnx, {"one": human})
    result = _label(colour_onnx, scenes, out, "--reviewed", tmp_path / "run", "--overlay", "--format", "cvat,labelstudio")
    assert result.exit_code == 0, result.output
    assert "1 reviewed mask(s) copied" in result.output
    report = json.loads((out / "report.json").read_text())["images"]
    record = report["street/one.png"]
    assert record["reviewed"] is True and record["reviewed_source"] == "review.json"
    assert record["mean_confidence"] == 1.0 and (out / "overlays" / "street" / "one.jpg").is_file()
    assert np.array_equal(load_label_png(out / record["mask"]), human)
    assert not any(r.get("reviewed") for rel, r in report.items() if rel != "street/one.png")
    assert np.array_equal(_painted(_tasks(out)["street/one.png"], list(Labeler(colour_onnx).info.classes)), human)
    # Another run, without --reviewed and with --overwrite: the model relabels every image but the reviewed one.
    before = {rel: (out / r["mask"]).stat().st_mtime_ns for rel, r in report.items()}
    again = _label(colour_onnx, scenes, out, "--overwrite")
    assert again.exit_code == 0, again.output
    after = json.loads((out / "report.json").read_text())["images"]
    assert after["street/one.png"]["reviewed"] and after["street/one.png"]["resumed"]
    assert np.array_equal(load_label_png(out / record["mask"]), human)
    assert (out / record["mask"]).stat().st_mtime_ns == before["street/one.png"]
    assert all((out / r["mask"]).stat().st_mtime_ns != before[rel] for rel, r in after.items() if rel != "street/one.png")
    # A newer review of the image replaces the older one.
    newer = human.copy()
    newer[100:150, 100:200] = 1
    CorrectionStore(store).apply({"one": newer}, {"source": "review2.json", "kind": "labelstudio", "items": {}},
                                 Labeler(colour_onnx).info.classes, np.asarray(Labeler(colour_onnx).info.palette, np.uint8))
    third = _label(colour_onnx, scenes, out, "--reviewed", store)
    assert third.exit_code == 0 and "1 reviewed mask(s) copied" in third.output, third.output
    assert np.array_equal(load_label_png(out / record["mask"]), newer)


def test_reviewed_masks_of_other_classes_or_no_store_are_refused(colour_onnx, scenes, tmp_path):
    missing = _label(colour_onnx, scenes, tmp_path / "a", "--reviewed", tmp_path / "nothing")
    assert missing.exit_code == 2 and "no corrections.json" in missing.output
    folder = tmp_path / "other" / "corrections"
    CorrectionStore(folder).apply({"one": np.zeros((160, 240), np.uint8)}, {"source": "x", "kind": "png", "items": {}},
                                  ("background", "zebra"), np.zeros((256, 3), np.uint8))
    other = _label(colour_onnx, scenes, tmp_path / "b", "--reviewed", folder)
    assert other.exit_code == 2 and "'zebra'" in other.output
    assert not (tmp_path / "b").exists()  # refused before any work


@pytest.fixture(scope="session")
def labelstudio_sdk():
    """Label Studio's own SDK in its environment (tests/review/labelstudio_sdk.py), or skip."""
    import importlib.util
    import sys

    name = "aesipe_tests_labelstudio_sdk"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "review" / "labelstudio_sdk.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    sdk, why = sys.modules[name].find_sdk()
    if sdk is None:
        pytest.skip(why)
    return sdk
