"""A model labels exactly as its run did: the exported pseudo-labeller in aesipe-label gives the labels of
the run's own make-cam + eval-cam rule, with the run's scales, flip, PAMR setting and background scale.

The two sides share the code that makes the maps (aesipe.models.pseudo_maps) and the rule that turns them
into labels (aesipe.pseudo_labels); what may still differ: make-cam stores its maps in float16 (a pixel
whose two best channels are within float16 rounding can flip) and ONNX Runtime sums in another order
than PyTorch (differences ~1e-6). Both only matter where two classes tie, so the labels are compared where
make-cam's float16 maps decide (the two best scaled channels apart by more than float16 rounding), and those
must be most pixels. Ties are common in these tiny random networks: a class without a seed gets its pre-ReLU
CAM as its map (the zero-map fallback), and maps sit near 1 over large areas.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aesipe.pseudo_labels import to_labels

FLOAT16_STEP = 2.0**-10  # relative spacing of float16 values (10 mantissa bits)


def _agreement(cfg, out: Path, split: str) -> tuple[float, int, float]:
    """(agreement where make-cam's maps decide, those pixels, their share of all pixels)."""
    from aesipe.data import open_dataset
    from aesipe.pseudo_labels import scale_background
    from aesipe.train.stages.evaluate import cam_dir, load_cam_file
    from aesipe.utils.labelpng import load_label_png

    ds = open_dataset(cfg.data, split)
    same = decided = total = 0
    for image_id in ds.ids:
        classes, maps = load_cam_file(cam_dir(cfg, split) / f"{image_id}.npz", "maps", cfg.cam.map)
        expected = to_labels(maps, classes, cfg.cam.background_scale)
        labelled = load_label_png(out / "masks" / f"{image_id}.png")
        top2 = np.sort(scale_background(maps, cfg.cam.background_scale), axis=0)[-2:] if len(maps) > 1 else None
        clear = np.ones(expected.shape, bool) if top2 is None else top2[1] - top2[0] > 2 * FLOAT16_STEP * top2[1]
        same += int((labelled == expected)[clear].sum())
        decided += int(clear.sum())
        total += expected.size
    return same / decided, decided, decided / total


# Small PAMR (3 iterations, dilations 1 and 2) keeps the unrolled export graph small: each export of the
# pseudo-labeller (2 scales x flip, in-graph PAMR) is most of these tests' time, so each mode is exported once.
PARITY_OVERRIDES = ("cam.scales=1.0,0.5", "cam.flip=true", "cam.background_scale=0.9", "model.pamr_iters=3",
                    "model.pamr_dilations=1,2", "model.pamr_backend=reference", "train.max_steps=6", "train.lr=0.05")


@pytest.fixture(scope="module")
def exported_runs(tiny_config, tiny_data, tmp_path_factory):
    """pamr mode -> (config, exported pseudo-labeller, work folder): a tiny trained run with its train CAMs.
    The "off" run is calibrated first (its map chosen among CAM and IS-CAM, so not the default AE-IS-CAM):
    the choice must reach the export.

    An export is mostly one core's Python (torch.export tracing the graph), so the "fused" run is exported by
    aesipe-export in a child process while this process exports "off": on two cores both take about as long
    as one."""
    pytest.importorskip("onnxruntime")
    from aesipe.export.api import export_model
    from aesipe.train.stages.calibrate import calibrate
    from aesipe.train.stages.make_cam import make_cams
    from aesipe.train.stages.stage1 import train_stage1

    runs = {}
    for pamr in ("off", "fused"):
        base = tmp_path_factory.mktemp(f"parity-{pamr}")
        cfg = tiny_config(base / "run", tiny_data, *PARITY_OVERRIDES, f"cam.pamr={pamr}")
        train_stage1(cfg)
        make_cams(cfg, "train", progress=False)
        if pamr == "off":
            cfg, _ = calibrate(cfg, "train", images=4, progress=False, maps=("iscam", "cam"), crf=False)
        runs[pamr] = (cfg, base / "pl.onnx", base)
    fused_cfg, fused_model, fused_base = runs["fused"]
    log = fused_base / "export.log"  # a file, not a pipe: a full pipe would stall the child until we read it
    with open(log, "w") as handle:
        child = subprocess.Popen([sys.executable, "-c", "from aesipe.export.cli import main; main()",
                                  str(fused_cfg.run_dir), str(fused_model), "--what", "pseudo-labeller"],
                                 stdout=handle, stderr=subprocess.STDOUT)
        try:
            export_model(runs["off"][0].run_dir, runs["off"][1], what="pseudo_labeller", log=lambda line: None)
        finally:
            child.wait()
    assert child.returncode == 0, log.read_text()[-3000:]
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("pamr", ["off", "fused"])
def test_exported_pseudo_labeller_labels_as_make_cam(pamr, exported_runs, tiny_data):
    from aesipe.infer import label_folder

    cfg, model, base = exported_runs[pamr]
    images = base / "images"
    images.mkdir()
    for path in (Path(tiny_data) / "JPEGImages").iterdir():
        if (Path(cfg.run_dir) / "cams" / "train" / f"{path.stem}.npz").is_file():
            shutil.copy(path, images / path.name)
    report = label_folder(model, images, base / "out", tags_csv=Path(tiny_data) / "labels_train.csv",
                          progress=False, log=lambda line: None)
    assert report.ok == len(list(images.iterdir())) and report.failed == 0
    # The zero-map fallback: aesipe-label counts the images make-cam flagged (the graph's fallback output).
    from aesipe.train.stages.evaluate import read_cam_file

    cams = Path(cfg.run_dir) / "cams" / "train"
    flagged = sum(bool(read_cam_file(cams / f"{p.stem}.npz", "maps", cfg.cam.map)[2].any()) for p in images.iterdir())
    assert report.summary["zero_map_fallback_images"] == flagged
    agreement, pixels, share = _agreement(cfg, base / "out", "train")
    assert agreement >= 0.999, f"{agreement:.5f} of {pixels} pixels agree"
    assert share >= 0.8, f"make-cam's float16 maps decide only {share:.3f} of the pixels"


@pytest.mark.slow
def test_the_labeller_refuses_other_test_time_settings_than_its_graphs(exported_runs):
    from aesipe.infer import Labeler
    from aesipe.utils.errors import UserError

    _, model, _ = exported_runs["off"]
    labeler = Labeler(model)
    assert labeler.graph_test_time["scales"] == [1.0, 0.5] and labeler.graph_test_time["flip"] is True
    with pytest.raises(UserError, match="inside the graph; re-export"):
        Labeler(model, scales=(1.0, 0.75))
    with pytest.raises(UserError, match="inside the graph; re-export"):
        Labeler(model, flip=True)
    rgb = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    assert set(np.unique(labeler.label(rgb, tags=["disc"]))) <= {0, 1}


@pytest.mark.slow
def test_the_calibrated_choice_and_the_fallback_output_reach_the_export(exported_runs):
    import json

    import onnx

    cfg, model, _ = exported_runs["off"]
    assert cfg.cam.map in ("iscam", "cam")  # calibrated: not the default map
    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    output = json.loads(meta["output"])
    assert output["map"] == cfg.cam.map and float(meta["background_scale"]) == cfg.cam.background_scale
    assert output["names"] == ["scores", "labels", "fallback"] and "crf" not in output


@pytest.mark.slow
def test_a_file_whose_run_chose_the_crf_labels_with_it(exported_runs, tmp_path):
    """calibrate may choose the label CRF: the file says so (output.crf, with the run's settings) and the Labeler
    applies it without being asked, as make-cam's pseudo-labels were made."""
    pytest.importorskip("pydensecrf")
    import json

    import onnx

    from aesipe.infer import Labeler

    _, model, _ = exported_runs["off"]
    proto = onnx.load(str(model), load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == "output":
            output = json.loads(prop.value)
            output["crf"] = {"protocol": "label", "iterations": 4, "gaussian_sxy": 3.0, "gaussian_compat": 3.0,
                             "bilateral_sxy": 30.0, "bilateral_srgb": 7.0, "bilateral_compat": 9.0, "gt_prob": 0.6}
            prop.value = json.dumps(output)
    with_crf = tmp_path / "with_crf.onnx"
    onnx.save(proto, str(with_crf))
    plain, refined = Labeler(model), Labeler(with_crf)
    assert not plain.crf and refined.crf and refined.crf_config.bilateral_sxy == 30.0 and refined.crf_config.iterations == 4
    rgb = np.random.default_rng(1).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    assert refined.needs_scores(refined.prepare(refined.decode(rgb), refined.tags_vector(["disc"]), confidence=False,
                                                probabilities=False))
