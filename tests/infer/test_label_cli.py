"""aesipe-label end to end: masks, report, exit codes, awkward inputs, resume."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aesipe.infer.cli import app
from aesipe.utils.labelpng import load_label_png

tiny = sys.modules["aesipe_tests_tiny_models"]
runner = CliRunner()


def _label(*args):
    return runner.invoke(app, [str(a) for a in args])


def _masks(out):
    return {p.relative_to(out / "masks").as_posix(): load_label_png(p) for p in sorted((out / "masks").rglob("*.png"))}


def test_round_trip_onnx_and_torchscript_agree(seg_onnx, seg_torchscript, photo_folder, tmp_path):
    results = {}
    for name, model in (("onnx", seg_onnx), ("ts", seg_torchscript)):
        out = tmp_path / name
        result = _label(model, photo_folder, out, "--batch-size", "2", "--overlay")
        assert result.exit_code == 0, result.output
        results[name] = _masks(out)
        assert sorted((out / "overlays").rglob("*.jpg"))
    onnx, ts = results["onnx"], results["ts"]
    assert list(onnx) == ["a.png", "b.png", "sub/c.png", "sub/d.png", "sub/deeper/e.png"]
    for rel, mask in onnx.items():
        original = Image.open(photo_folder / rel.replace(".png", {"a": ".jpg", "b": ".png", "c": ".JPG",
                                                                    "d": ".webp", "e": ".bmp"}[rel[-5]]))
        assert mask.shape == (original.height, original.width) and mask.max() < len(tiny.CLASSES)
        assert (mask == ts[rel]).mean() > 0.999
    assert Image.open(tmp_path / "onnx" / "masks" / "a.png").mode == "P"


def test_report_contents(seg_onnx, photo_folder, tmp_path):
    assert _label(seg_onnx, photo_folder, tmp_path).exit_code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    summary, images = report["summary"], report["images"]
    assert summary["images"] == summary["ok"] == 5 and summary["failed"] == 0
    assert summary["providers"] == ["CPUExecutionProvider"] and summary["provider_fallback"] is None
    assert summary["images_per_second"] > 0 and set(summary["stage_busy_seconds"]) == {
        "decode", "inference", "postprocess_write"}
    record = images["sub/c.JPG"]
    assert record["status"] == "ok" and record["size"] == [33, 47] and record["mask"] == "masks/sub/c.png"
    mask = load_label_png(tmp_path / "masks" / "sub" / "c.png")
    for index, name in enumerate(tiny.CLASSES):
        expected = float((mask == index).mean())
        assert record["classes"].get(name, 0.0) == pytest.approx(expected, abs=1e-6)


def test_awkward_inputs_are_labelled_and_broken_ones_reported(seg_onnx, tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    rgb = tiny.smooth_rgb(50, 70)
    Image.fromarray(rgb).convert("L").save(root / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(root / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(root / "deep16.tif")
    Image.fromarray(rgb).convert("CMYK").save(root / "cmyk.jpg")
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 8
    rotated.save(root / "rotated.jpeg", exif=exif)
    Image.fromarray(rgb[:1, :1]).save(root / "one.png")
    Image.fromarray(rgb[:3, :5]).save(root / "three_by_five.png")
    Image.fromarray(tiny.smooth_rgb(90, 300)).save(root / "large.jpg")
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("hello")
    (root / "cut.jpg").write_bytes((root / "large.jpg").read_bytes()[:400])
    (root / "readme.md").write_text("ignored")

    result = _label(seg_onnx, root, tmp_path / "out", "--max-side", "64")
    assert result.exit_code == 1, result.output
    images = json.loads((tmp_path / "out" / "report.json").read_text())["images"]
    assert set(images) == {"gray.png", "rgba.png", "palette.png", "deep16.tif", "cmyk.jpg", "rotated.jpeg",
                           "one.png", "three_by_five.png", "large.jpg", "empty.png", "text.jpg", "cut.jpg"}
    sizes = {"rotated.jpeg": [70, 50], "one.png": [1, 1], "three_by_five.png": [3, 5], "large.jpg": [90, 300]}
    for name, record in images.items():
        if name in ("empty.png", "text.jpg", "cut.jpg"):
            assert record["status"] == "failed" and record["reason"]
            assert not (tmp_path / "out" / "masks" / name.replace(".jpg", ".png")).exists()
        else:
            assert record["status"] == "ok", (name, record)
            assert record["size"] == sizes.get(name, [50, 70])
            mask = load_label_png(tmp_path / "out" / record["mask"])
            assert list(mask.shape) == record["size"]
    assert images["empty.png"]["reason"] == "empty file"


@pytest.mark.parametrize("args,message", [
    (lambda m, i, o: ["missing.onnx", i, o], "model file not found"),
    (lambda m, i, o: [m, i / "nope", o], "input not found"),
    (lambda m, i, o: [m, i, o, "--scales", "1,x"], "--scales must be numbers"),
    (lambda m, i, o: [m, i, o, "--batch-size", "0"], "--batch-size must be at least 1"),
    (lambda m, i, o: [m, i, o, "--device", "tpu"], "--device must be one of"),
    (lambda m, i, o: [m, i, o, "--streams", "0"], "--streams must be at least 1"),
    (lambda m, i, o: [m, i, o, "--streams", "2", "--engine", "ray"], "--streams is for the local engine"),
])
def test_usage_errors_exit_2_with_one_line(seg_onnx, photo_folder, tmp_path, args, message):
    result = _label(*args(seg_onnx, photo_folder, tmp_path / "out"))
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_files_not_from_aesipe_export_are_refused(photo_folder, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    result = _label(tmp_path / "other.onnx", photo_folder, tmp_path / "out")
    assert result.exit_code == 2 and "not made by aesipe-export" in result.output


def test_interrupted_run_resumes_and_loses_nothing(seg_onnx, photo_folder, tmp_path, monkeypatch):
    from aesipe.infer import folder as pipeline
    from aesipe.infer import steps as job

    clean = tmp_path / "clean"
    assert _label(seg_onnx, photo_folder, clean, "--workers", "1").exit_code == 0
    real_save, calls = job.save_label_png, []

    def interrupted_save(path, labels, palette, text=None):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_save(path, labels, palette, text)

    monkeypatch.setattr(job, "save_label_png", interrupted_save)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        pipeline.label_folder(seg_onnx, photo_folder, out, workers=1, batch_size=1, progress=False)
    written = sorted(p.name for p in (out / "masks").rglob("*.png"))
    assert 2 <= len(written) < 5 and not list(out.rglob(".*.tmp"))
    monkeypatch.setattr(job, "save_label_png", real_save)
    result = _label(seg_onnx, photo_folder, out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["ok"] == 5 and report["summary"]["resumed"] == len(written)
    assert sum(bool(r.get("resumed")) for r in report["images"].values()) == len(written)
    clean_masks, masks = _masks(clean), _masks(out)
    assert clean_masks.keys() == masks.keys() and all((clean_masks[k] == masks[k]).all() for k in masks)
    rerun = _label(seg_onnx, photo_folder, out)
    assert rerun.exit_code == 0 and json.loads((out / "report.json").read_text())["summary"]["resumed"] == 5


def test_overwrite_redoes_every_image(seg_onnx, photo_folder, tmp_path):
    assert _label(seg_onnx, photo_folder, tmp_path).exit_code == 0
    result = _label(seg_onnx, photo_folder, tmp_path, "--overwrite")
    assert result.exit_code == 0 and json.loads((tmp_path / "report.json").read_text())["summary"]["resumed"] == 0


def test_pseudo_labeller_needs_tags_and_uses_them(pl_onnx, photo_folder, tmp_path):
    missing = _label(pl_onnx, photo_folder, tmp_path / "x")
    assert missing.exit_code == 2 and "--tags" in missing.output
    csv = tmp_path / "tags.csv"
    csv.write_text("image,labels\na,cat\nb.png,dog car\nsub/c,\nsub/d.webp,car\n")
    result = _label(pl_onnx, photo_folder, tmp_path / "out", "--tags", csv)
    assert result.exit_code == 1  # sub/deeper/e.bmp has no row
    report = json.loads((tmp_path / "out" / "report.json").read_text())["images"]
    assert "no row" in report["sub/deeper/e.bmp"]["reason"]
    allowed = {"a.png": {0, 1}, "b.png": {0, 2, 3}, "sub/c.png": {0}, "sub/d.png": {0, 3}}
    for rel, mask in _masks(tmp_path / "out").items():
        assert set(np.unique(mask)) <= allowed[rel]
    typo = tmp_path / "typo.csv"
    typo.write_text("image,labels\na,kat\n")
    bad = _label(pl_onnx, photo_folder, tmp_path / "y", "--tags", typo)
    assert bad.exit_code == 2 and "did you mean 'cat'" in bad.output


def test_test_time_scales_and_flip(seg_onnx, photo_folder, tmp_path):
    result = _label(seg_onnx, photo_folder, tmp_path, "--scales", "1.0,0.75", "--flip")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["summary"]["options"]["scales"] == [1.0, 0.75] and report["images"]["a.jpg"]["size"] == [40, 56]


def test_crf_option(seg_onnx, photo_folder, tmp_path):
    from aesipe.crf import crf_available

    result = _label(seg_onnx, photo_folder, tmp_path, "--crf")
    if crf_available():
        assert result.exit_code == 0 and len(_masks(tmp_path)) == 5
    else:
        assert result.exit_code == 2 and "pip install 'aesipe[crf]'" in result.output


def test_a_model_failure_on_one_image_fails_only_that_image(seg_onnx, photo_folder, tmp_path, monkeypatch):
    from aesipe.infer import folder as pipeline
    from aesipe.infer.labeler import Labeler

    real_run_batch = Labeler.run_batch
    # b.png shares its size (and so its batch) with two others: they must survive the retry.
    victim = np.asarray(Image.open(photo_folder / "b.png").convert("RGB"))

    def flaky_run_batch(self, items):
        if any(np.array_equal(item.decoded.rgb, victim) for item in items):
            raise RuntimeError("simulated runtime failure")
        return real_run_batch(self, items)

    monkeypatch.setattr(Labeler, "run_batch", flaky_run_batch)
    out = tmp_path / "out"
    pipeline.label_folder(seg_onnx, photo_folder, out, workers=1, batch_size=4, progress=False)
    data = json.loads((out / "report.json").read_text())
    failed = {k: v for k, v in data["images"].items() if v["status"] != "ok"}
    assert list(failed) == ["b.png"]
    assert "simulated runtime failure" in failed["b.png"]["reason"]
    assert len(data["images"]) == 5 and len(list((out / "masks").rglob("*.png"))) == 4
