"""The review loop end to end at toy size: a run labels its training images for Label Studio, a reviewer edits
one mask, the export comes back as a correction, and the pipeline redoes only what depends on it."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from aesipe.train.cli import app

runner = CliRunner()


def _ran(output: str) -> list[str]:
    return re.findall(r"\[([a-z0-9-]+)\] running", output)


@pytest.mark.slow  # trains three toy networks and exports one
def test_label_review_import_rerun(run_dir, tiny_data, tiny_config, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("pydensecrf")
    export_api = pytest.importorskip("aesipe.export.api")
    from aesipe.corrections import CorrectionStore
    from aesipe.data import open_dataset
    from aesipe.data.transforms import SegTrainDataset
    from aesipe.infer import label_folder
    from aesipe.infer.labelstudio import brush_results
    from aesipe.train.pipeline import run_pipeline
    from aesipe.utils.labelpng import load_label_png

    cfg = tiny_config(run_dir, tiny_data)
    run_pipeline(cfg, echo=lambda line: None)
    model = tmp_path / "segmenter.onnx"
    export_api.export_model(run_dir, model, format="onnx", log=lambda line: None)

    # 1. label the training images for review (the run's review queue links them, named by image id)
    assert runner.invoke(app, ["review-queue", str(run_dir), "--n", "10"]).exit_code == 0
    out = tmp_path / "review"
    label_folder(model, run_dir / "review_queue", out, formats="labelstudio", progress=False, log=lambda line: None)
    tasks = json.loads((out / "labelstudio_tasks.json").read_text())
    assert len(tasks) == 10

    # 2. the reviewer repaints one image in Label Studio (its export: the task with an annotation)
    ds = open_dataset(cfg.data, "train")
    task = tasks[0]
    image_id = task["data"]["aesipe_image"].rsplit(".", 1)[0]
    edited = ds.load_mask(image_id).copy()
    edited[:12, :12] = 2
    task["annotations"] = [{"id": 1, "result": brush_results(edited, ds.class_names), "was_cancelled": False,
                            "updated_at": "2026-12-07T12:00:00Z"}]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))

    # 3. back into the run
    imported = runner.invoke(app, ["corrections", str(run_dir), str(export)])
    assert imported.exit_code == 0 and "imported 1 new" in imported.output, imported.output

    # 4. the pipeline redoes what depends on the corrections, and says why
    again = runner.invoke(app, ["pipeline", str(run_dir)])
    assert again.exit_code == 0, again.output
    assert _ran(again.output) == ["ir-label", "irn", "make-seg-labels", "eval-seg-labels", "seg", "eval-seg"]
    assert "[corrections] changed: ir-label, seg read them" in again.output
    assert "[ir-label] corrections changed: old outputs removed" in again.output
    assert again.output.count("up to date, skipped") == 3  # train, make-cam, eval-cam

    # 5. the edited image trains on the edit: its IR label and its segmenter label are the reviewer's mask
    assert np.array_equal(load_label_png(run_dir / "ir_labels" / "train" / f"{image_id}.png"), edited)
    corrected = CorrectionStore.of_run(run_dir).masks_for(ds)
    dataset = SegTrainDataset(ds, run_dir / "seg_labels" / "train", crop_size=48, scale_range=(1.0, 1.0), flip=False,
                              jitter=0.0, seed=0, corrected=corrected)
    assert np.array_equal(load_label_png(dataset.label_path(image_id)), edited)

    # 6. the same export again changes nothing, and nothing is redone
    same = runner.invoke(app, ["corrections", str(run_dir), str(export)])
    assert same.exit_code == 0 and "nothing new" in same.output
    third = runner.invoke(app, ["pipeline", str(run_dir)])
    assert _ran(third.output) == [] and "[corrections]" not in third.output
