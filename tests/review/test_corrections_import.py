"""aesipe-train corrections: every source format, matched by class name, all or nothing, re-imports."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aesipe.corrections import CorrectionStore
from aesipe.data import open_dataset
from aesipe.train.cli import app
from aesipe.train.corrections import import_corrections
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import save_label_png

runner = CliRunner()


def _train(cfg):
    return open_dataset(cfg.data, "train")


def _edited(ds, image_id: str) -> np.ndarray:
    """The image's true mask with a reviewer's edit: a square of the last class in its top-left corner."""
    mask = ds.load_mask(image_id).copy()
    mask[:10, :10] = len(ds.class_names) - 1
    return mask


def _index_folder(ds, ids, folder: Path, with_names: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        save_label_png(folder / f"{image_id}.png", _edited(ds, image_id), ds.palette)
    if with_names:
        (folder / "class_names.txt").write_text("\n".join(ds.class_names) + "\n")
    return folder


def _cvat_folder(ds, ids, folder: Path, classes=None) -> Path:
    """The layout aesipe-label --format cvat writes (its own writer functions)."""
    from aesipe.infer.companions import save_colour_png
    from aesipe.infer.gathered import cvat_labelmap

    classes = classes or ds.class_names
    (folder / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    (folder / "labelmap.txt").write_text(cvat_labelmap(classes, ds.palette))
    for image_id in ids:
        save_colour_png(folder / "SegmentationClass" / f"{image_id}.png", _edited(ds, image_id), ds.palette)
    return folder


def _stored(cfg, image_id) -> np.ndarray:
    return CorrectionStore.of_run(cfg.run_dir).load_mask(image_id)


# ---- the formats --------------------------------------------------------------------------------------------
def test_index_pngs_are_imported_with_a_record_of_their_source(review_run, tmp_path):
    ds = _train(review_run)
    ids = ds.ids[:3]
    source = _index_folder(ds, ids, tmp_path / "reviewed")
    report = import_corrections(review_run, source, echo=lambda line: None)
    assert report.kind == "png" and sorted(report.result.added) == sorted(ids)
    store = CorrectionStore.of_run(review_run.run_dir)
    assert store.ids == sorted(ids) and store.classes == ds.class_names
    for image_id in ids:
        assert np.array_equal(store.load_mask(image_id), _edited(ds, image_id))
        entry = store.entry(image_id)
        assert entry["source"] == str(source.resolve()) and entry["kind"] == "png" and entry["item"] == f"{image_id}.png"


def test_index_pngs_with_class_names_are_matched_by_name(review_run, tmp_path):
    ds = _train(review_run)
    image_id = ds.ids[0]
    folder = tmp_path / "renumbered"
    folder.mkdir()
    # The reviewer's tool numbered the classes in another order: names decide, not indices.
    order = [ds.class_names[0], *reversed(ds.class_names[1:])]
    (folder / "class_names.txt").write_text("\n".join(order) + "\n")
    edited = _edited(ds, image_id)
    recoded = np.array([order.index(ds.class_names[v]) if v < len(order) else v for v in range(256)], np.uint8)[edited]
    save_label_png(folder / f"{image_id}.png", recoded, ds.palette)
    import_corrections(review_run, folder, echo=lambda line: None)
    assert np.array_equal(_stored(review_run, image_id), edited)


@pytest.mark.parametrize("zipped", [False, True])
def test_cvat_exports_folder_or_zip(review_run, tmp_path, zipped):
    ds = _train(review_run)
    ids = ds.ids[:2]
    source = _cvat_folder(ds, ids, tmp_path / "cvat")
    (source / "ImageSets" / "Segmentation").mkdir(parents=True)
    (source / "ImageSets" / "Segmentation" / "default.txt").write_text("\n".join(ids) + "\n")
    if zipped:  # CVAT's download: the export inside a zip
        archive = tmp_path / "task_export.zip"
        with zipfile.ZipFile(archive, "w") as handle:
            for path in source.rglob("*"):
                handle.write(path, path.relative_to(source).as_posix())
        source = archive
    report = import_corrections(review_run, source, echo=lambda line: None)
    assert report.kind == "cvat" and sorted(report.result.added) == sorted(ids)
    for image_id in ids:
        assert np.array_equal(_stored(review_run, image_id), _edited(ds, image_id))


def test_coco_rle_and_polygons(review_run, tmp_path):
    mask_api = pytest.importorskip("pycocotools.mask")
    ds = _train(review_run)
    first, second = ds.ids[:2]
    truth = _edited(ds, first)
    categories = [{"id": 9 + i, "name": name} for i, name in enumerate(ds.class_names) if i > 0]
    annotations = []
    for value in np.unique(truth):
        if 0 < value < 255:
            rle = mask_api.encode(np.asfortranarray(truth == value, dtype=np.uint8))
            annotations.append({"id": len(annotations) + 1, "image_id": 1, "category_id": 10 + int(value) - 1,
                                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}, "iscrowd": 0})
    height, width = ds.load_mask(second).shape
    polygon = [[5, 5, 25, 5, 25, 25, 5, 25]]  # a square of class 1 on the second image
    annotations.append({"id": 99, "image_id": 2, "category_id": 10, "segmentation": polygon, "iscrowd": 0})
    document = {"images": [{"id": 1, "file_name": f"photos/{first}.jpg", "height": truth.shape[0], "width": truth.shape[1]},
                           {"id": 2, "file_name": f"{second}.jpg", "height": height, "width": width}],
                "annotations": annotations, "categories": categories}
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(document))
    report = import_corrections(review_run, path, echo=print)
    assert report.kind == "coco"
    stored = _stored(review_run, first)
    assert np.array_equal(stored, np.where(truth == 255, 0, truth))  # COCO has no void: unpainted is background
    expected = np.zeros((height, width), np.uint8)
    expected[mask_api.decode(mask_api.merge(mask_api.frPyObjects(polygon, height, width))).astype(bool)] = 1
    assert np.array_equal(_stored(review_run, second), expected)


def _labelstudio_export(tasks: list[dict], path: Path) -> Path:
    path.write_text(json.dumps(tasks))
    return path


def _annotated(task: dict, result: list[dict], updated: str = "2026-01-01T10:00:00Z", annotation_id: int = 1) -> dict:
    return {**task, "id": annotation_id, "annotations": [
        {"id": annotation_id, "result": result, "was_cancelled": False, "updated_at": updated}]}


def test_labelstudio_export_of_our_tasks(review_run, tmp_path):
    from aesipe.infer.labelstudio import TaskEntry, brush_results, task

    ds = _train(review_run)
    ids = ds.ids[:3]
    tasks = []
    for image_id in ids:
        guess = np.zeros_like(ds.load_mask(image_id))  # the model said "all background"
        made = task(TaskEntry(f"{image_id}.jpg", guess, 0.5), ds.class_names, "m1", "http://host/photos")
        edited = _edited(ds, image_id)
        tasks.append(_annotated(made, brush_results(np.where(edited == 255, 0, edited), ds.class_names)))
    tasks.append({"data": {"image": "http://host/photos/x.jpg"}, "annotations": []})  # not reviewed: skipped
    export = _labelstudio_export(tasks, tmp_path / "export.json")
    report = import_corrections(review_run, export, echo=lambda line: None)
    assert report.kind == "labelstudio" and sorted(report.result.added) == sorted(ids)
    for image_id in ids:
        edited = _edited(ds, image_id)
        assert np.array_equal(_stored(review_run, image_id), np.where(edited == 255, 0, edited))


def test_labelstudio_masks_painted_by_the_sdk(review_run, tmp_path, labelstudio_sdk):
    ds = _train(review_run)
    image_id = ds.ids[0]
    edited = _edited(ds, image_id)
    values = [int(v) for v in np.unique(edited) if 0 < v < 255]
    rles = labelstudio_sdk.encode([np.where(edited == v, 255, 0) for v in values])
    height, width = edited.shape
    result = [{"type": "brushlabels", "original_width": width, "original_height": height, "from_name": "label",
               "to_name": "image", "value": {"format": "rle", "rle": rle, "brushlabels": [ds.class_names[v]]}}
              for v, rle in zip(values, rles)]
    # Label Studio's upload names files '<8 hex>-<name>'; the reference is all there is.
    export = _labelstudio_export([_annotated({"data": {"image": f"/data/upload/1/0a1b2c3d-{image_id}.jpg"}}, result)],
                                 tmp_path / "export.json")
    import_corrections(review_run, export, echo=lambda line: None)
    assert np.array_equal(_stored(review_run, image_id), np.where(edited == 255, 0, edited))


def test_labelstudio_newest_annotation_wins_and_polygons_paint(review_run, tmp_path):
    ds = _train(review_run)
    image_id = ds.ids[0]
    height, width = ds.load_mask(image_id).shape
    square = {"type": "polygonlabels", "original_width": width, "original_height": height,
              "value": {"points": [[0, 0], [50, 0], [50, 50], [0, 50]], "polygonlabels": [ds.class_names[2]]}}
    task = {"data": {"image": f"/data/local-files/?d=photos/{image_id}.jpg"}, "annotations": [
        {"id": 1, "result": [], "was_cancelled": False, "updated_at": "2026-01-02T00:00:00Z"},
        {"id": 2, "result": [square], "was_cancelled": False, "updated_at": "2026-01-03T00:00:00Z"},
        {"id": 3, "result": [], "was_cancelled": True, "updated_at": "2026-01-04T00:00:00Z"}]}
    import_corrections(review_run, _labelstudio_export([task], tmp_path / "export.json"), echo=lambda line: None)
    stored = _stored(review_run, image_id)
    assert set(np.unique(stored)) == {0, 2} and stored[: height // 2 - 1, : width // 2 - 1].min() == 2


# ---- all or nothing, one line per problem -------------------------------------------------------------------
def test_every_problem_is_one_line_and_nothing_is_imported(review_run, tmp_path):
    ds = _train(review_run)
    val = open_dataset(review_run.data, "val")
    source = _cvat_folder(ds, ds.ids[:2], tmp_path / "cvat", classes=[*ds.class_names[:-1], "zebra"])
    good = ds.load_mask(ds.ids[2])
    from aesipe.infer.companions import save_colour_png

    save_colour_png(source / "SegmentationClass" / f"{ds.ids[2]}.png", good[:-3], ds.palette)  # wrong size
    save_colour_png(source / "SegmentationClass" / f"{val.ids[0]}.png", val.load_mask(val.ids[0]), ds.palette)
    save_colour_png(source / "SegmentationClass" / "not_an_image.png", good, ds.palette)
    lines: list[str] = []
    with pytest.raises(UserError, match="5 problem"):
        import_corrections(review_run, source, echo=lines.append)
    assert len(lines) == 5, lines
    assert sum("'zebra' is not one of the run's classes" in line for line in lines) == 2
    assert any("mask is 40x37 but image" in line for line in lines)
    assert any(f"{val.ids[0]!r} is in split 'val', not a training split" in line for line in lines)
    assert any("'not_an_image' is not in the dataset" in line for line in lines)
    assert not (Path(review_run.run_dir) / "corrections").exists()


def test_the_command_prints_the_problems_and_exits_2(review_run, tmp_path):
    ds = _train(review_run)
    source = _index_folder(ds, ds.ids[:1], tmp_path / "reviewed")
    save_label_png(source / "unknown_image.png", ds.load_mask(ds.ids[0]), ds.palette)
    result = runner.invoke(app, ["corrections", str(review_run.run_dir), str(source)])
    assert result.exit_code == 2
    assert "'unknown_image' is not in the dataset" in result.output
    assert "1 problem(s)" in result.output and "nothing imported" in result.output
    assert "Traceback" not in result.output
    assert not CorrectionStore.of_run(review_run.run_dir).ids


def test_same_source_twice_is_a_no_op_and_a_newer_mask_replaces(review_run, tmp_path):
    ds = _train(review_run)
    image_id = ds.ids[0]
    source = _index_folder(ds, [image_id], tmp_path / "reviewed")
    first = runner.invoke(app, ["corrections", str(review_run.run_dir), str(source)])
    assert first.exit_code == 0 and "imported 1 new" in first.output, first.output
    record = (Path(review_run.run_dir) / "corrections" / "corrections.json").read_text()
    again = runner.invoke(app, ["corrections", str(review_run.run_dir), str(source)])
    assert again.exit_code == 0 and "nothing new" in again.output, again.output
    assert (Path(review_run.run_dir) / "corrections" / "corrections.json").read_text() == record
    newer = tmp_path / "reviewed2"
    shutil.copytree(source, newer)
    mask = _edited(ds, image_id)
    mask[-5:, -5:] = 1
    save_label_png(newer / f"{image_id}.png", mask, ds.palette)
    third = runner.invoke(app, ["corrections", str(review_run.run_dir), str(newer)])
    assert third.exit_code == 0 and "1 replaced" in third.output, third.output
    assert f"{image_id}: replaces the correction imported" in third.output and str(source.resolve()) in third.output
    store = CorrectionStore.of_run(review_run.run_dir)
    assert np.array_equal(store.load_mask(image_id), mask) and store.entry(image_id)["source"] == str(newer.resolve())
    assert len(list((Path(review_run.run_dir) / "corrections" / "masks").glob("*.png"))) == 1  # the old file went
