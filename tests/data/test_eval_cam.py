"""eval-cam and crf end to end on hand-made CAM files (expected figures worked out by hand).

The 'bands' images are 10x16: band 0 = columns 0-3 (40 px, background), band 1 = columns 4-7 (40 px),
band 2 = columns 8-15 (80 px). u: class 1 in bands 1-2; v: class 1 in band 1, class 2 in band 2.
u's maps: background 0.7; class 1 at 0.5 / 0.65 / 0.9. v's maps: the one-hot ground truth.
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from aesipe.config import RunConfig, from_dict
from aesipe.train.cli import app
from aesipe.train.stages.evaluate import evaluate_cams
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import load_label_png

from .conftest import band_map, graded_u, one_hot_v, write_cam

needs_crf = pytest.mark.skipif(importlib.util.find_spec("pydensecrf") is None, reason="pydensecrf is not installed")
runner = CliRunner()


def config(run, bands, **sections) -> RunConfig:
    return from_dict(RunConfig, {"run_dir": str(run), "data": {"root": str(bands)}, **sections})


def test_background_scale_decides_by_hand(bands_run, bands):
    result = evaluate_cams(config(bands_run, bands), "train", "maps", [0.8, 1.0, 0.5], progress=False)
    # x0.8: u's band 1 (0.65 > 0.56) becomes class 1 and band 0 (0.5 < 0.56) stays background: all right.
    assert result["miou"] == 1.0 and result["pixel_accuracy"] == 1.0
    sweep = {row["background_scale"]: row["miou"] for row in result["sweep"]}
    # x1.0: u's band 1 -> background. IoU bg 80/120, class 1 120/160, class 2 1.
    assert sweep[1.0] == pytest.approx((2 / 3 + 3 / 4 + 1) / 3, abs=1e-6)
    # x0.5: u's band 0 -> class 1. IoU bg 40/80, class 1 160/200, class 2 1.
    assert sweep[0.5] == pytest.approx((1 / 2 + 4 / 5 + 1) / 3, abs=1e-6)
    assert result["best_background_scale"] == 0.8 and [r["best"] for r in result["sweep"]] == [True, False, False]
    assert result["confusion"] == [[80, 0, 0], [0, 160, 0], [0, 0, 80]]


def test_swapped_classes_give_the_known_miou(bands_run, bands):
    write_cam(bands_run, "train", "v", *one_hot_v(swap=True))
    result = evaluate_cams(config(bands_run, bands), "train", "maps", [0.8], progress=False)
    # bg all right (IoU 1); class 1: 120 right, 80 false (v's band 2), 40 missed -> 0.5; class 2: 0.
    assert result["miou"] == pytest.approx(0.5)
    assert result["per_class"]["dog"] == {"iou": 0.0, "precision": 0.0, "recall": 0.0, "gt_pixels": 80}


def test_plain_cam_key_uses_one_minus_max_as_background(bands_run, bands):
    # u's plain-CAM background = 1 - 0.5/0.65/0.9: at x0.8 everything in u is class 1.
    result = evaluate_cams(config(bands_run, bands), "train", "cam", [0.8], progress=False)
    assert result["map_key"] == "cam"
    assert result["miou"] == pytest.approx((1 / 2 + 4 / 5 + 1) / 3, abs=1e-6)


def test_plain_cam_key_uses_the_networks_background_when_stored(bands_run, bands):
    # make-cam stores the plain CAM with the network's own background (1 - max over *all* classes, here
    # 1.0: another class was strong). At x0.8 that 0.8 beats u's class 1 in band 1 (0.65), not in band 2
    # (0.9): 80 of u's 120 class-1 pixels stay class 1 (with 1 - max over u's own classes all 120 do).
    # v's file keeps the aesipe 0.1 layout (foreground only), read as before: its 40 class-1 pixels.
    classes, maps = graded_u()
    network_cam = maps.copy()
    network_cam[0] = 1.0
    np.savez(bands_run / "cams" / "train" / "u.npz", classes=np.asarray(classes, np.int64), maps=maps,
             cam=network_cam)
    result = evaluate_cams(config(bands_run, bands), "train", "cam", [0.8], progress=False)
    assert result["confusion"][1][1] == 80 + 40
    assert result["confusion"][1][0] == 40


def test_iscam_and_aeiscam_keys_judge_those_maps(bands_run, bands):
    # The same run stores IS-CAM (here: v's classes swapped) beside the selected maps (v's one-hot).
    for image_id, (classes, maps) in {"u": graded_u(), "v": one_hot_v()}.items():
        swapped = one_hot_v(swap=True)[1] if image_id == "v" else maps
        path = bands_run / "cams" / "train" / f"{image_id}.npz"
        np.savez(path, classes=np.asarray(classes, np.int64), maps=maps.astype(np.float16),
                 cam=maps[1:].astype(np.float16), iscam=swapped.astype(np.float16))  # fmt: skip
    cfg = config(bands_run, bands)
    assert evaluate_cams(cfg, "train", "maps", [0.8], progress=False)["miou"] == 1.0
    iscam = evaluate_cams(cfg, "train", "iscam", [0.8], progress=False)
    assert iscam["map_key"] == "iscam" and iscam["miou"] == pytest.approx(0.5)  # as the swapped test
    result = runner.invoke(app, ["eval-cam", str(bands_run), f"data.root={bands}", "--map-key", "aeiscam"])
    assert result.exit_code == 2 and "no 'aeiscam' array (made by a model without affinity enhancement?)" in result.output


def test_cli_prints_the_table_and_writes_the_json(bands_run, bands):
    result = runner.invoke(app, ["eval-cam", str(bands_run), f"data.root={bands}", "--sweep", "1.0,0.5"])
    assert result.exit_code == 0, result.output
    assert "mean         100.0 100.0 100.0" in result.output
    assert "x0.80  mIoU 100.0   <- best" in result.output
    document = json.loads((bands_run / "cam_eval.json").read_text())
    assert document["format"] == "aesipe-cam-eval" and document["miou"] == 1.0
    assert [row["background_scale"] for row in document["sweep"]] == [0.8, 1.0, 0.5]
    assert "excluded from the mean" in document["convention"] and "crf_eval" not in document
    assert (bands_run / "config.toml").is_file()  # the run remembers its data root


@pytest.mark.parametrize(
    "prepare, message",
    [
        (lambda run: None, "run directory not found"),
        (lambda run: run.mkdir(), "no CAMs for split 'train' in .*make-cam"),
        (lambda run: write_cam(run, "train", "u", [0], np.zeros((1, 10, 16))), r"1 of 2 images of split 'train' have no CAM .*first: v"),
        (lambda run: [write_cam(run, "train", i, [0], np.zeros((1, 4, 4))) for i in "uv"], r"maps are 4x4 but the mask is 16x10"),
        (lambda run: [write_cam(run, "train", i, [0, 5], np.zeros((2, 10, 16))) for i in "uv"], r"class value 5 but the dataset has 2"),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line(tmp_path, bands, prepare, message):
    run = tmp_path / "fresh_run"
    prepare(run)
    result = runner.invoke(app, ["eval-cam", str(run), f"data.root={bands}"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "aesipe-train: error:" in result.output
    assert __import__("re").search(message, result.output), result.output


def test_cli_rejects_bad_options(bands_run, bands):
    result = runner.invoke(app, ["eval-cam", str(bands_run), f"data.root={bands}", "--sweep", "0.5,high"])
    assert result.exit_code == 2 and "--sweep must be numbers like 1.0,0.75 or a range" in result.output
    result = runner.invoke(app, ["eval-cam", str(bands_run), f"data.root={bands}", "--map-key", "heatmap"])
    assert result.exit_code == 2 and "--map-key must be one of maps, cam, iscam, aeiscam" in result.output


@needs_crf
def test_eval_with_both_crf_protocols(bands_run, bands):
    cfg = config(bands_run, bands, crf={"workers": 2})
    label = evaluate_cams(cfg, "train", "maps", [0.8, 1.0], crf_protocol="label", progress=False)
    assert label["crf_protocol"] == "label" and label["miou"] == 1.0 and label["crf"]["gt_prob"] == 0.7
    # IR protocol: u's band 1 is unsure (bg at x1.0, class at x0.8) and counted as background.
    ir = evaluate_cams(cfg, "train", "maps", None, crf_protocol="ir", progress=False)
    assert ir["background_scale"] == 0.8 and ir["ir_fg_background_scale"] == 1.0
    assert ir["miou"] == pytest.approx((2 / 3 + 3 / 4 + 1) / 3, abs=1e-6)
    result = runner.invoke(app, ["eval-cam", str(bands_run), f"data.root={bands}", "crf.workers=1", "--crf"])
    assert result.exit_code == 0, result.output
    assert "+CRF (label protocol)" in result.output
    document = json.loads((bands_run / "cam_eval.json").read_text())
    assert document["crf_protocol"] is None and document["crf_eval"]["crf_protocol"] == "label"


@needs_crf
def test_crf_command_writes_resumable_palette_pngs_and_a_sheet(bands_run, bands):
    args = ["crf", str(bands_run), f"data.root={bands}", "crf.workers=1"]
    result = runner.invoke(app, [*args, "--sheet"])
    assert result.exit_code == 0, result.output
    out = bands_run / "pseudo_labels" / "train"
    expected = {"u": [0, 1, 1], "v": [0, 1, 2]}
    for image_id, bands_values in expected.items():
        labels = load_label_png(out / f"{image_id}.png")
        np.testing.assert_array_equal(labels[0, [0, 5, 12]], bands_values)
    assert (bands_run / "pseudo_labels" / "train_sheet.jpg").stat().st_size > 0
    # Same settings: finished PNGs are kept. Other settings: the folder is remade.
    stamp = (out / "u.png").stat().st_mtime_ns
    (out / "v.png").unlink()
    assert runner.invoke(app, args).exit_code == 0
    assert (out / "u.png").stat().st_mtime_ns == stamp and (out / "v.png").is_file()
    assert runner.invoke(app, [*args, "crf.gt_prob=0.8"]).exit_code == 0
    assert (out / "u.png").stat().st_mtime_ns != stamp


@needs_crf
def test_crf_command_ir_protocol_writes_unsure_pixels(bands_run, bands):
    result = runner.invoke(app, ["crf", str(bands_run), f"data.root={bands}", "data.train_split=train", "--protocol", "ir"])
    assert result.exit_code == 0, result.output
    labels = load_label_png(bands_run / "ir_labels" / "train" / "u.png")
    np.testing.assert_array_equal(labels[:, 4:8], 255)
    np.testing.assert_array_equal(labels[:, :4], 0)
    np.testing.assert_array_equal(labels[:, 8:], 1)


def test_calibrate_picks_the_best_scale_on_the_masks_and_stores_it(bands_run, bands):
    from aesipe.config.schema import read_run_config
    from aesipe.train.stages.calibrate import CALIBRATION_FILE, calibrate

    cfg = config(bands_run, bands)
    # The calibration must choose what eval-cam rates best on the same images (u's class-1 band values
    # 0.5 / 0.65 / 0.9 against a background of 0.7 make the scales differ), and store it.
    scales = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2]
    expected = evaluate_cams(cfg, "train", "maps", scales, progress=False)["best_background_scale"]
    calibrated, record = calibrate(cfg, "train", images=2, scales=scales, progress=False)
    assert calibrated.cam.background_scale == expected == record["background_scale"]
    assert read_run_config(bands_run / "config.toml").cam.background_scale == expected
    saved = json.loads((bands_run / CALIBRATION_FILE).read_text())
    assert saved["images"] == ["u", "v"] and len(saved["sweep"]) == len(scales)
    assert calibrated.ir_label.bg_background_scale == expected
    assert calibrated.ir_label.fg_background_scale == max(1.0, expected / 0.8)


def test_sweep_takes_a_range(bands_run):
    from aesipe.utils.cli import parse_scales

    assert parse_scales("0.5:1.0:0.1", "--sweep") == (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert parse_scales("0.8,1.0", "--sweep") == (0.8, 1.0)
    for bad in ("1.0:0.5:0.1", "0.5,high", "", "0,1", "-1", "nan", "1:2"):
        with pytest.raises(UserError, match=r"--sweep must be numbers like 1\.0,0\.75 or a range START:STOP:STEP"):
            parse_scales(bad, "--sweep")


def _write_maps(run, image_id, classes, **arrays) -> None:
    path = run / "cams" / "train" / f"{image_id}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {k: np.asarray(v, np.float16) for k, v in arrays.items()}
    np.savez(path, classes=np.asarray(classes, np.int64), maps=stored["aeiscam"], **stored)


def test_calibrate_chooses_the_map_and_the_run_reads_it_from_the_same_files(bands_run, bands):
    from aesipe.config.schema import read_run_config
    from aesipe.train.stages.calibrate import calibrate, describe

    # u: AE-IS-CAM (the configured map) calls band 0 class 1 at every scale tried; CAM and IS-CAM are the truth.
    classes = [0, 1]
    wrong = np.stack([band_map((0.7, 0.7, 0.7)), band_map((0.9, 0.65, 0.9))])
    truth = np.stack([band_map((1, 0, 0)), band_map((0, 1, 1))])
    _write_maps(bands_run, "u", classes, aeiscam=wrong, iscam=truth, cam=truth)
    v_classes, v_maps = one_hot_v()
    _write_maps(bands_run, "v", v_classes, aeiscam=v_maps, iscam=v_maps, cam=v_maps)
    cfg = config(bands_run, bands)
    calibrated, record = calibrate(cfg, "train", images=2, scales=[0.6, 0.8, 1.0], progress=False, crf=False)
    assert [c["map"] for c in record["candidates"]] == ["aeiscam", "cam", "iscam"]  # the configured map first
    assert calibrated.cam.map == record["map"] == "cam" and not calibrated.cam.crf  # CAM ties IS-CAM: the first
    assert read_run_config(bands_run / "config.toml").cam.map == "cam"
    assert "<- chosen" in describe(record) and "CRF not tried" in describe(record)
    # eval-cam's "maps" is now the stored choice, read from the same CAM files: no make-cam needed.
    assert evaluate_cams(calibrated, "train", "maps", [calibrated.cam.background_scale], progress=False)["miou"] == 1.0
    assert evaluate_cams(cfg, "train", "maps", [calibrated.cam.background_scale], progress=False)["miou"] < 1.0


@needs_crf
def test_calibrate_tries_the_crf_on_each_map(bands_run, bands):
    from aesipe.train.stages.calibrate import calibrate

    cfg = config(bands_run, bands, crf={"workers": 0})
    _, record = calibrate(cfg, "train", images=2, scales=[0.8, 1.0], progress=False)
    with_crf = [c for c in record["candidates"] if c["crf"]]
    plain = [c for c in record["candidates"] if not c["crf"]]
    assert [c["map"] for c in with_crf] == [c["map"] for c in plain] and all(c["miou"] is not None for c in with_crf)
    assert record["miou"] == max(c["miou"] for c in record["candidates"])


def test_eval_cam_counts_images_whose_map_fell_back(bands_run, bands):
    classes, maps = one_hot_v()
    path = bands_run / "cams" / "train" / "v.npz"
    np.savez(path, classes=np.asarray(classes, np.int64), maps=maps.astype(np.float16),
             fallback_maps=np.array([False, False, True]))
    result = evaluate_cams(config(bands_run, bands), "train", "maps", [0.8], progress=False)
    assert result["zero_map_fallback"] == {"images": 1, "classes": {"dog": 1}}
