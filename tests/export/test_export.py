"""aesipe-export: files carry their metadata, match PyTorch, and fail cleanly."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aesipe.export.api import build_graph, cam_settings_of
from aesipe.export.cli import app
from aesipe.export.sources import load_source
from aesipe.export.verify import sample_inputs
from aesipe.infer.session import open_backend, read_torchscript_metadata

tiny = sys.modules["aesipe_tests_tiny_models"]  # loaded by conftest.py

runner = CliRunner()


def _reference(run, what):
    loaded = load_source(run / ("seg/final.pt" if what == "segmenter" else "stage1/final.pt"))
    test_time = cam_settings_of(loaded) if what != "segmenter" else None
    return build_graph(loaded, loaded.net, test_time, half=False)


def test_onnx_metadata_and_dynamic_inputs(seg_onnx):
    backend = open_backend(seg_onnx, device="cpu", providers=None, threads=None, streams=1)
    info = backend.info
    assert info.classes == tuple(tiny.CLASSES) and info.model_kind == "segmenter" and info.opset == 20
    assert info.input_format.normalised_in_graph and info.input_format.size_divisor == 16
    shape = backend.session.get_inputs()[0].shape
    assert shape[1] == 3 and all(isinstance(d, str) for d in (shape[0], shape[2], shape[3]))
    assert [o.name for o in backend.session.get_outputs()] == ["scores", "labels"]


@pytest.mark.parametrize("what,fixture", [("segmenter", "seg_onnx"), ("segmenter", "seg_torchscript"),
                                          ("pseudo_labeller", "pl_onnx")])
def test_exported_file_matches_pytorch_on_unseen_sizes(what, fixture, request, export_base):
    path = request.getfixturevalue(fixture)
    reference = _reference(export_base / "run", what)
    backend = open_backend(path, device="cpu", providers=None, threads=None, streams=1)
    for height, width in ((48, 80), (112, 32)):
        inputs = sample_inputs(height, width, None if what == "segmenter" else 3, seed=7)
        with torch.no_grad():
            ref_scores, ref_labels = reference(*inputs)
        out = backend.run(inputs[0].numpy(), inputs[1].numpy() if len(inputs) > 1 else None, ("scores", "labels"))
        np.testing.assert_allclose(out["scores"], ref_scores.numpy(), rtol=1e-4, atol=1e-4)
        assert (out["labels"] == ref_labels.numpy()).mean() > 0.999


def test_pseudo_labeller_zeroes_untagged_classes(pl_onnx):
    backend = open_backend(pl_onnx, device="cpu", providers=None, threads=None, streams=1)
    image, _ = sample_inputs(64, 64, 3)
    tags = np.array([[1, 0, 0], [0, 0, 1]], dtype=np.float32)
    out = backend.run(image.numpy(), tags, ("scores", "labels"))
    assert np.all(out["scores"][0, 2:] == 0) and np.all(out["scores"][1, 1:3] == 0)
    assert set(np.unique(out["labels"][0])) <= {0, 1} and set(np.unique(out["labels"][1])) <= {0, 3}
    assert backend.info.pamr["dilations"] == [1, 2] and backend.info.background_scale == 0.8


def test_torchscript_metadata_is_readable_without_loading(seg_torchscript):
    meta = read_torchscript_metadata(seg_torchscript)
    assert meta["producer"] == "aesipe-export" and meta["model_kind"] == "segmenter"
    assert "opset" not in meta and "custom_ops" not in meta


def test_cli_exports_a_run_directory_and_prints_the_next_step(export_base, tmp_path):
    out = tmp_path / "seg.onnx"
    result = runner.invoke(app, [str(export_base / "run"), str(out)])
    assert result.exit_code == 0, result.output
    assert "parity on 2x3x64x96, 2x3x77x59" in result.output and "label agreement 100.000%" in result.output
    assert f"next: aesipe-label {out} IMAGES/ OUT_DIR/" in result.output
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["seg.onnx"]


def test_broken_parity_fails_the_export_and_leaves_no_file(export_base, tmp_path, monkeypatch):
    from aesipe.infer import session

    real_run = session.OrtBackend.run

    def wrong_run(self, image, tags, want):  # as if the exporter had mistranslated the graph
        out = real_run(self, image, tags, want)
        return {k: (v + 0.5 if k == "scores" else (v + 1) % 4) for k, v in out.items()}

    monkeypatch.setattr(session.OrtBackend, "run", wrong_run)
    out = tmp_path / "bad.onnx"
    result = runner.invoke(app, [str(export_base / "run"), str(out)])
    assert result.exit_code == 1
    assert "does not match PyTorch" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("setup,expected", [
    (lambda p: p / "missing", "source not found"),
    (lambda p: p, "has no seg/final.pt: train the segmenter first"),
])
def test_usage_errors_are_one_line_exit_2(tmp_path, setup, expected):
    result = runner.invoke(app, [str(setup(tmp_path))])
    assert result.exit_code == 2 and expected in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_stage1_run_without_checkpoint_names_the_stage(tmp_path):
    result = runner.invoke(app, [str(tmp_path), "--what", "pseudo-labeller"])
    assert result.exit_code == 2 and "stage1/final.pt" in result.output and "aesipe-train train" in result.output


def test_missing_onnxscript_says_what_to_install(export_base, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    result = runner.invoke(app, [str(export_base / "run")])
    assert result.exit_code == 2 and "pip install 'aesipe[export]'" in result.output


def test_wrong_kind_for_what_is_refused(export_base):
    result = runner.invoke(app, [str(export_base / "run" / "seg" / "final.pt"), "--what", "pseudo-labeller"])
    assert result.exit_code == 2 and "holds a deeplabv3 model" in result.output


def test_the_runs_current_cam_settings_win_over_the_checkpoints(tmp_path):
    """aesipe-train calibrate (or a user) changes cam.* in RUN/config.toml after training: the exported
    pseudo-labeller follows the run, whether the run or a checkpoint inside it is named; the network is
    built from the checkpoint's own config. A checkpoint outside any run keeps its own cam settings."""
    import dataclasses
    import shutil

    from aesipe.config import save_config

    run = tiny.make_run(tmp_path / "run")
    trained = tiny.tiny_config()
    save_config(dataclasses.replace(trained, cam=dataclasses.replace(trained.cam, background_scale=1.25),
                                    model=dataclasses.replace(trained.model, pamr_iters=7)), run / "config.toml")
    (run / "stage1" / "checkpoints").mkdir()
    shutil.copy(run / "stage1" / "final.pt", run / "stage1" / "checkpoints" / "last.pt")
    shutil.copy(run / "stage1" / "final.pt", tmp_path / "outside.pt")
    with tiny.builders_installed():
        for source in (run, run / "stage1" / "final.pt", run / "stage1" / "checkpoints" / "last.pt"):
            loaded = load_source(source, what="pseudo_labeller")
            assert loaded.cfg.cam.background_scale == 1.25, source
            assert loaded.cfg.model.pamr_iters == trained.model.pamr_iters, source
        assert load_source(tmp_path / "outside.pt").cfg.cam.background_scale == trained.cam.background_scale
