"""The pipeline's first minutes for a new user: a wrong data.root is one line before any stage or folder, and a
stage that fails is recorded as failed (not "running") and resumed by the next run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aesipe.data.synth import generate
from aesipe.train.cli import app
from aesipe.utils.errors import UserError

runner = CliRunner()


@pytest.fixture
def data(tmp_path) -> Path:
    return generate(tmp_path / "data", 4, 2, 32, 0, 2, progress=False)


def test_a_missing_dataset_is_one_line_before_any_stage_and_makes_no_run_folder(tmp_path):
    run = tmp_path / "runs" / "voc"
    result = runner.invoke(app, ["pipeline", str(run), f"data.root={tmp_path / 'VOCdevkit'}"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"aesipe-train: error: dataset root not found: {tmp_path / 'VOCdevkit'} (data.root)"
    assert not (tmp_path / "runs").exists()


def test_the_synthetic_data_is_offered_only_for_the_default_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["pipeline", "run"])  # data.root left at its default, data/synth
    assert result.exit_code == 2 and "aesipe-train synth data/synth" in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_a_bad_split_of_a_later_stage_is_found_before_the_first_stage(tmp_path, data):
    result = runner.invoke(app, ["pipeline", str(tmp_path / "run"), f"data.root={data}", "data.eval_split=holdout"])
    assert result.exit_code == 2 and "holdout" in result.output and "running" not in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_a_failed_stage_is_recorded_as_failed_and_resumed(tmp_path, data, monkeypatch):
    from aesipe.train.stages import stage1

    def broken(cfg):
        raise UserError("stage 1 could not read its weights: /nowhere.pth")

    monkeypatch.setattr(stage1, "train_stage1", broken)
    run = tmp_path / "run"
    result = runner.invoke(app, ["pipeline", str(run), f"data.root={data}", "--until", "train"])
    assert result.exit_code == 2 and "/nowhere.pth" in result.output, result.output
    record = json.loads((run / "manifest.json").read_text())["stages"]["train"]
    assert record["status"] == "failed" and "/nowhere.pth" in record["error"] and "finished" in record

    def works(cfg):
        (run / "stage1").mkdir()
        return run / "stage1" / "final.pt"

    monkeypatch.setattr(stage1, "train_stage1", works)
    result = runner.invoke(app, ["pipeline", str(run), "--until", "train"])
    assert result.exit_code == 0, result.output
    assert "[train] resuming after a failure (UserError: stage 1 could not read its weights: /nowhere.pth)" in result.output
    record = json.loads((run / "manifest.json").read_text())["stages"]["train"]
    assert record["status"] == "done"
