"""Run directories written by aesipe 0.1 still load: config, checkpoints (final and resumable) and the
pipeline manifest (tests/fixtures/aesipe-0.1, made by aesipe 0.1.0 itself; see make_fixtures.py there)."""
from __future__ import annotations

import dataclasses
import json
import lzma
import shutil
from pathlib import Path

import pytest

from aesipe.config import SCHEMA_VERSION, RunConfig, run_config_from_saved
from aesipe.config.schema import read_run_config

FIXTURES = Path(__file__).parents[1] / "fixtures" / "aesipe-0.1"


@pytest.fixture
def legacy_run(tmp_path) -> Path:
    """The 0.1 run directory, decompressed into the test's folder."""
    run = tmp_path / "run"
    for packed in FIXTURES.rglob("*.xz"):
        target = run / packed.relative_to(FIXTURES).with_suffix("")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(lzma.decompress(packed.read_bytes()))
    shutil.copy(FIXTURES / "manifest.json", run / "manifest.json")
    return run


def test_a_saved_config_of_0_1_means_what_it_meant(legacy_run):
    cfg = read_run_config(legacy_run / "config.toml")
    assert cfg.schema == SCHEMA_VERSION
    assert cfg.runtime.device == "cpu"  # was train.device / irn.device / seg.device / random_walk.device
    assert cfg.train.lr == 0.05 and cfg.cam.background_scale == 0.9
    # Fields added since keep 0.1's behaviour: its checkpoints were trained that way.
    assert cfg.model.freeze_bn_affine and cfg.model.mask_ae_seeds and not cfg.model.ae_align_corners
    # A config written today keeps today's defaults.
    assert not run_config_from_saved({"schema": SCHEMA_VERSION}).model.freeze_bn_affine


def test_resolving_the_run_config_upgrades_config_toml(legacy_run):
    from aesipe.train.runconfig import resolve_run_config

    cfg = resolve_run_config(legacy_run, overrides=["cam.flip=false"], save=True)
    again = read_run_config(legacy_run / "config.toml")
    assert again == cfg and not again.cam.flip and again.runtime.device == "cpu"
    assert "schema = 2" in (legacy_run / "config.toml").read_text()


@pytest.mark.parametrize("name", ["final.pt", "checkpoints/last.pt"])
def test_checkpoints_of_0_1_rebuild_their_models(legacy_run, name):
    from aesipe.train.stages.irn import load_irn
    from aesipe.train.stages.make_cam import load_stage1_model
    from aesipe.train.stages.seg import load_segmenter

    cfg = dataclasses.replace(read_run_config(legacy_run / "config.toml"), run_dir=str(legacy_run))
    net, classes = load_stage1_model(cfg, legacy_run / "stage1" / name)  # load_state_dict(strict=True) inside
    assert classes == ["background", "a", "b", "c"] and net.has_ae
    irn, trained = load_irn(cfg, legacy_run / "irn" / name)
    assert trained.irn.backbone == "mobilenet_v2" and trained.runtime.device == "cpu"
    segmenter, _ = load_segmenter(cfg, legacy_run / "seg" / name)
    assert segmenter is not None


def test_export_reads_0_1_checkpoints(legacy_run):
    from aesipe.export.sources import load_source

    loaded = load_source(legacy_run / "stage1" / "final.pt")
    assert loaded.what == "pseudo_labeller" and loaded.cfg.model.freeze_bn_affine
    assert load_source(legacy_run, "segmenter").what == "segmenter"


def _fake_outputs(run: Path, manifest: dict) -> None:
    for record in manifest["stages"].values():
        for relative in record["outputs"]:
            path = run / relative
            if path.suffix == ".json":
                path.write_text("{}")
            else:
                path.mkdir(parents=True, exist_ok=True)


@pytest.fixture
def legacy_pipeline(legacy_run, tmp_path, monkeypatch):
    """(pipeline module with recording stand-in stages, the list they record into, the run's config)."""
    from aesipe.data.synth import generate
    from aesipe.train import pipeline

    monkeypatch.chdir(tmp_path)  # the 0.1 config names data/synth relative to where it ran
    generate(tmp_path / "data" / "synth", 4, 2, 32, 0, 3, progress=False)
    _fake_outputs(legacy_run, json.loads((legacy_run / "manifest.json").read_text()))
    ran: list[str] = []
    monkeypatch.setattr(pipeline, "run_stage", lambda stage, cfg: ran.append(stage.name) or {})
    return pipeline, ran, dataclasses.replace(read_run_config(legacy_run / "config.toml"), run_dir=str(legacy_run))


def test_a_0_1_manifest_is_adopted_not_redone(legacy_pipeline, legacy_run):
    pipeline, ran, cfg = legacy_pipeline
    lines: list[str] = []
    manifest = pipeline.run_pipeline(cfg, echo=lines.append)
    assert ran == [] and lines[0].startswith("[manifest] 9 stage record(s) of aesipe 0.1 adopted")
    assert all("up to date" in line for line in lines[1:])
    assert all(r["schema"] == SCHEMA_VERSION for r in manifest["stages"].values())
    assert json.loads((legacy_run / "manifest.json").read_text())["stages"]["seg"]["schema"] == SCHEMA_VERSION
    # A setting changed at the same time is still noticed: that stage and its dependents are redone.
    changed = dataclasses.replace(cfg, random_walk=dataclasses.replace(cfg.random_walk, beta=7.0))
    pipeline.run_pipeline(changed, echo=lines.append)
    assert ran == ["make-seg-labels", "eval-seg-labels", "seg", "eval-seg"]


def test_a_0_1_manifest_with_a_setting_0_1_lacked_is_redone(legacy_pipeline):
    pipeline, ran, cfg = legacy_pipeline
    new_recipe = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, freeze_bn_affine=False))
    pipeline.run_pipeline(new_recipe, echo=lambda line: None)
    assert ran == [s.name for s in pipeline.STAGES]
    assert isinstance(new_recipe, RunConfig)
