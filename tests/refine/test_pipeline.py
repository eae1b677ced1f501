"""The pipeline and the demo, run for real at toy size: manifest, skipping, changed config, resume, errors."""
from __future__ import annotations

import dataclasses
import functools
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from aesipe.train.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


_NOT_A_USE = ("dataclasses", "copy", "copyreg", "pickle")
"""Modules whose reads of a config are not a stage using the value: copying, comparing, serialising (the
schema's own code, ``aesipe.config.*``, is left out too: validation and ``to_dict`` for checkpoints)."""


def _recording(cfg, reads: dict[str, set], current: list):
    """A copy of the run config whose sections add every field read to ``reads[current[0]]``, as
    ``section.field`` (copies made with ``dataclasses.replace`` keep recording; a pickled copy, for a worker
    process, is a plain one)."""

    def section(value, prefix: str):
        cls, names = type(value), {f.name for f in dataclasses.fields(value)}

        def getattribute(self, name):
            if name in names and current[0]:
                caller = sys._getframe(1).f_globals.get("__name__", "")
                if not (caller.startswith(_NOT_A_USE) or caller.startswith("aesipe.config")):
                    reads.setdefault(current[0], set()).add(prefix + name)
            return object.__getattribute__(self, name)

        def reduce(self):
            return functools.partial(cls, **{n: object.__getattribute__(self, n) for n in names}), ()

        recording = type(f"Recording{cls.__name__}", (cls,), {"__getattribute__": getattribute, "__reduce__": reduce})
        return recording(**{n: getattr(value, n) for n in names})

    return dataclasses.replace(cfg, **{f.name: section(getattr(cfg, f.name), f"{f.name}.")
                                       for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))})


@pytest.fixture(scope="module")  # every test using it is marked slow: it trains three networks
def demo_out(tmp_path_factory, tiny_overrides, tiny_synth):
    """One toy demo run (every stage, export and labelling) shared by this module's tests; ``reads.json``
    records the config fields each stage read."""
    from aesipe.train import pipeline
    from aesipe.train.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    reads: dict[str, set] = {}
    real_run_stage = pipeline.run_stage

    def recording_run_stage(stage, cfg):
        current = [stage.name]
        try:
            return real_run_stage(stage, _recording(cfg, reads, current))
        finally:
            current[0] = None  # copies kept by a stage (none should be) stop recording

    pipeline.run_stage = recording_run_stage
    try:
        run_demo(out, overrides=tiny_overrides, synth=tiny_synth, echo=lines.append, export=False,
                 init_steps=2, progress=False)
    finally:
        pipeline.run_stage = real_run_stage
    (out / "demo_output.txt").write_text("\n".join(lines))
    (out / "reads.json").write_text(json.dumps({k: sorted(v) for k, v in reads.items()}))
    return out


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())["stages"]


def _ran(output: str) -> list[str]:
    """Stages the pipeline ran (progress bars share the captured output, so search anywhere)."""
    return re.findall(r"\[([a-z0-9-]+)\] running", output)


@pytest.mark.slow  # demo_out trains three networks
def test_demo_runs_every_stage_and_reports(demo_out):
    from aesipe.train.pipeline import STAGE_NAMES

    stages = _manifest(demo_out / "run")
    assert list(stages) == list(STAGE_NAMES)
    assert all(record["status"] == "done" for record in stages.values())
    for name in ("eval-cam", "eval-seg-labels", "eval-seg"):
        assert 0.0 <= stages[name]["metrics"]["miou"] <= 1.0
    assert stages["irn"]["inputs"] == {"ir-label": stages["ir-label"]["key"]}
    assert torch.load(demo_out / "run" / "seg" / "final.pt", weights_only=False)["kind"] == "deeplabv3"
    assert len(list((demo_out / "run" / "seg_labels" / "train").glob("*.png"))) == 10
    text = (demo_out / "demo_output.txt").read_text()
    assert "mIoU by stage" in text and "DeepLabV3" in text and "random-walk pseudo-labels" in text


@pytest.mark.slow  # demo_out trains three networks
def test_each_stage_declares_what_it_reads(demo_out):
    """A stage that reads a config field neither its ``@reads`` nor an ancestor's names (so its manifest key
    does not hash it) would keep stale outputs when that field changes; a part a stage declares that its run
    does not read would redo work for nothing."""
    from aesipe.config import RUNTIME_ONLY_FIELDS
    from aesipe.config.schema import read_run_config
    from aesipe.train.pipeline import STAGES, hashed_reads

    cfg = read_run_config(demo_out / "run" / "config.toml")
    reads = {stage: set(fields) for stage, fields in json.loads((demo_out / "reads.json").read_text()).items()}
    assert set(reads) == {stage.name for stage in STAGES}, "every stage ran and read its config"
    own = {stage.name: stage.reads(cfg) for stage in STAGES}
    for stage in STAGES:
        hashed = set(hashed_reads(stage.name, own))
        used = {r for r in reads[stage.name] if r.split(".")[1] not in RUNTIME_ONLY_FIELDS}
        undeclared = sorted(r for r in used if r not in hashed and r.split(".")[0] not in hashed)
        assert not undeclared, f"{stage.name} reads {undeclared}, which its key does not hash"
        unread = sorted(d for d in own[stage.name] if not any(r == d or r.startswith(d + ".") for r in used))
        assert not unread, f"{stage.name} declares {unread} but its run does not read them"


def test_the_reads_recorder_sees_what_a_stage_reads_and_nothing_else():
    """The instrument of the test above: a field read by stage code is recorded under the stage; copying,
    comparing and serialising the config are not reads."""
    from aesipe.config import RunConfig, to_dict

    reads, current = {}, ["s"]
    cfg = _recording(RunConfig(), reads, current)
    _ = cfg.cam.scales, cfg.seg.lr
    copy = dataclasses.replace(cfg, cam=dataclasses.replace(cfg.cam, flip=False))
    _ = copy.cam.map
    to_dict(cfg), dataclasses.asdict(cfg.crf), cfg == copy
    assert reads == {"s": {"cam.scales", "seg.lr", "cam.map"}}
    import pickle

    assert pickle.loads(pickle.dumps(cfg.cam)) == RunConfig().cam


@pytest.mark.slow
def test_demo_exports_and_labels_a_folder(demo_out, tmp_path, tiny_overrides):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("aesipe.export.api")
    import shutil

    from aesipe.train.demo import _export_and_label, demo_config

    out = tmp_path / "demo"
    shutil.copytree(demo_out, out)
    lines = _export_and_label(demo_config(out, tiny_overrides), out, echo=lambda line: None)
    assert (out / "segmenter.onnx").is_file(), lines
    assert len(list((out / "labelled" / "masks").glob("*.png"))) == 4, lines
    assert len(list((out / "labelled" / "overlays").glob("*.jpg"))) == 4, lines


@pytest.mark.slow  # demo_out trains three networks
def test_rerun_skips_finished_stages(demo_out):
    result = runner.invoke(app, ["pipeline", str(demo_out / "run")])
    assert result.exit_code == 0, result.output
    assert _ran(result.output) == []
    assert result.output.count("up to date, skipped") == 9
    assert "mIoU by stage" in result.output


@pytest.mark.slow  # demo_out trains three networks
def test_changed_config_redoes_dependents_only(demo_out, tmp_path):
    import shutil

    run = shutil.copytree(demo_out / "run", tmp_path / "run")
    before = _manifest(run)
    result = runner.invoke(app, ["pipeline", str(run), "random_walk.beta=8"])
    assert result.exit_code == 0, result.output
    assert _ran(result.output) == ["make-seg-labels", "eval-seg-labels", "seg", "eval-seg"]
    after = _manifest(run)
    for name in ("train", "make-cam", "eval-cam", "ir-label", "irn"):
        assert after[name]["key"] == before[name]["key"] and after[name]["finished"] == before[name]["finished"]
    for name in ("make-seg-labels", "seg", "eval-seg"):
        assert after[name]["key"] != before[name]["key"]
    # evaluation-only settings redo only the evaluation
    result = runner.invoke(app, ["pipeline", str(run), "seg.test_flip=true"])
    assert _ran(result.output) == ["eval-seg"]
    # a runtime-only setting changes nothing
    result = runner.invoke(app, ["pipeline", str(run), "seg.log_every=5", "data.workers=1"])
    assert _ran(result.output) == []


@pytest.mark.slow  # demo_out trains three networks
def test_killed_run_resumes_where_it_stopped(demo_out, tmp_path):
    import shutil

    run = shutil.copytree(demo_out / "run", tmp_path / "run")
    manifest_path = run / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    # as if killed during seg after its step-1 checkpoint: record "running", no final.pt, last.pt at step 1
    manifest["stages"]["seg"]["status"] = "running"
    for name in ("eval-seg",):
        del manifest["stages"][name]
    manifest_path.write_text(json.dumps(manifest))
    (run / "seg" / "final.pt").unlink()
    last = torch.load(run / "seg" / "checkpoints" / "last.pt", weights_only=False)
    step1 = last | {"step": 1}
    torch.save(step1, run / "seg" / "checkpoints" / "last.pt")
    result = runner.invoke(app, ["pipeline", str(run)])
    assert result.exit_code == 0, result.output
    assert "[seg] resuming an interrupted run" in result.output
    assert _ran(result.output) == ["seg", "eval-seg"]
    assert torch.load(run / "seg" / "final.pt", weights_only=False)["step"] == 2
    assert _manifest(run)["seg"]["status"] == "done"


@pytest.mark.slow  # demo_out trains three networks
def test_from_and_until(demo_out, tmp_path):
    import shutil

    run = shutil.copytree(demo_out / "run", tmp_path / "run")
    result = runner.invoke(app, ["pipeline", str(run), "--from", "seg", "--until", "seg"])
    assert result.exit_code == 0, result.output
    assert _ran(result.output) == ["seg"] and "[seg] redone: old outputs removed" in result.output
    result = runner.invoke(app, ["pipeline", str(run), "--from", "segmenter"])
    assert result.exit_code == 2 and "--from must name a stage" in result.output


def test_demo_toml_mirrors_the_builtin_recipe():
    from aesipe.config import RunConfig, from_dict
    from aesipe.train.demo import DEMO_RECIPE

    recipe = tomllib.loads((REPO / "configs" / "demo.toml").read_text())
    recipe["model"].pop("pretrained")
    recipe["data"].pop("root")
    assert from_dict(RunConfig, recipe) == from_dict(RunConfig, DEMO_RECIPE)


def test_summary_says_when_a_stage_made_the_pseudo_labels_worse():
    from aesipe.train.pipeline_summary import summary_lines

    def manifest(stage1: float, walk: float, seg_on_train: float | None) -> dict:
        seg = {"miou": 0.50, "split": "val"}
        if seg_on_train is not None:
            seg |= {"miou_on_labels_split": seg_on_train, "labels_split": "train"}
        return {"stages": {"eval-cam": {"metrics": {"miou": stage1, "split": "train"}},
                           "eval-seg-labels": {"metrics": {"miou": walk, "split": "train"}},
                           "eval-seg": {"metrics": seg}}}

    lines = summary_lines(manifest(0.513, 0.498, 0.49))
    warnings = [line for line in lines if line.startswith("!")]
    assert len(warnings) == 2
    assert "random-walk pseudo-labels (IRN) 49.8% on train are 1.5 points below the stage-1 pseudo-labels" in warnings[0]
    assert "DeepLabV3 49.0% on train are 0.8 points below the random-walk pseudo-labels" in warnings[1]
    assert not [line for line in summary_lines(manifest(0.469, 0.546, 0.56)) if line.startswith("!")]
    assert not [line for line in summary_lines(manifest(0.469, 0.546, None)) if line.startswith("!")]
