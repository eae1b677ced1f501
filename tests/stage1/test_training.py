"""Stage-1 training, resume after a kill, make-cam output and the CLI, on tiny synthetic data (CPU)."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aesipe.config import RunConfig, from_dict
from aesipe.models.aesipe_net import AESIPENet
from aesipe.train import checkpointing as ckpt_io
from aesipe.train import engine
from aesipe.train.cli import app
from aesipe.train.stages import stage1
from aesipe.train.stages.make_cam import make_cams


def test_sgd_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    net = AESIPENet(3, "resnet50", no_pretrained=True, pamr_backend="reference")
    batch = {"image": torch.randn(2, 3, 32, 32), "labels": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
             "valid": torch.ones(2, 32, 32)}
    backbone, new = net.parameter_groups()
    opt = engine.build_sgd(engine.param_groups([backbone, new], [0.001, 0.01], 1e-4), 0.001, 0.9, 1e-4)
    losses = []
    for _ in range(3):
        out = stage1.stage1_losses(net, batch)
        losses.append(out["loss"].item())
        opt.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
    assert losses[-1] < losses[0]
    assert out["loss"].item() == pytest.approx(out["loss_cls"].item() + out["loss_gsc"].item(), rel=1e-6)


def _weights(path):
    return ckpt_io.load_checkpoint(path)["model"]


def _log_rows(run_dir):
    with (run_dir / "stage1" / "log.csv").open() as handle:
        return [(r["step"], r["loss"], r["lr0"]) for r in csv.DictReader(handle)]


def test_resume_after_a_kill_follows_the_uninterrupted_run(tmp_path, make_cfg, monkeypatch):
    straight = stage1.train_stage1(make_cfg(tmp_path / "straight"))
    # Same seed, killed at step 3 (after the step-2 checkpoint), then simply run again.
    real_losses, calls = stage1.stage1_losses, {"n": 0}

    def dies_at_step_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_losses(*args, **kwargs)

    monkeypatch.setattr(stage1, "stage1_losses", dies_at_step_3)
    cfg = make_cfg(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        stage1.train_stage1(cfg)
    assert ckpt_io.load_checkpoint(tmp_path / "killed/stage1/checkpoints/last.pt")["step"] == 2
    assert not (tmp_path / "killed/stage1/final.pt").exists()
    monkeypatch.setattr(stage1, "stage1_losses", real_losses)
    resumed = stage1.train_stage1(cfg)

    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _log_rows(tmp_path / "killed") == _log_rows(tmp_path / "straight")
    assert [r[0] for r in _log_rows(tmp_path / "killed")] == ["1", "2", "3", "4"]
    final = ckpt_io.load_checkpoint(resumed, kind="aesipe")
    assert final["step"] == 4 and "optimizer" not in final
    assert from_dict(RunConfig, final["config"]) == cfg
    assert final["class_names"][0] == "background"


def test_cli_train_then_make_cam_writes_the_documented_files(tmp_path, make_overrides):
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(run), *make_overrides(**{"train.max_steps": 2})])
    assert result.exit_code == 0, result.output
    assert (run / "stage1/final.pt").is_file() and (run / "config.toml").is_file()
    result = runner.invoke(app, ["make-cam", str(run), "--split", "val"])
    assert result.exit_code == 0, result.output
    files = sorted((run / "cams/val").glob("*.npz"))
    assert len(files) == 3
    from aesipe.data import open_dataset
    from aesipe.train.runconfig import resolve_run_config

    ds = open_dataset(resolve_run_config(run, save=False).data, "val")
    for path in files:
        data = np.load(path)
        labels = ds.labels(path.stem)
        expected = [0, *(np.flatnonzero(labels) + 1)]
        assert data["classes"].tolist() == expected and data["classes"].dtype == np.int64
        k = len(expected)
        height, width = ds.load_image(path.stem).shape[:2]
        assert data["maps"].shape == (k, height, width) and data["maps"].dtype == np.float16
        assert data["cam"].shape == (k, height, width)  # the network's own background first
        assert data["iscam"].shape == data["aeiscam"].shape == (k, height, width)
        assert np.array_equal(data["maps"], data["aeiscam"])  # cam.map = aeiscam by default
        assert data["maps"].min() >= 0 and np.allclose(data["maps"].max(axis=(1, 2))[:1], 1.0, atol=1e-3)
    before = {p: p.stat().st_mtime_ns for p in files}
    files[0].unlink()
    result = runner.invoke(app, ["make-cam", str(run), "--split", "val"])
    assert result.exit_code == 0 and files[0].is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p != files[0])  # others skipped

    result = runner.invoke(app, ["make-cam", str(run), "model.affinity_enhancement=false", "--split", "train"])
    assert result.exit_code == 2 and "cam.map=aeiscam needs" in result.output


def test_make_cam_without_a_checkpoint_is_a_clear_error(tmp_path, make_cfg):
    from aesipe.utils.errors import UserError

    with pytest.raises(UserError, match="run `aesipe-train train"):
        make_cams(make_cfg(tmp_path / "empty"), "val")


def test_random_init_mobilenet_learns_because_its_batchnorm_trains(make_cfg, tmp_path):
    """Frozen identity BatchNorm on random weights shrinks activations until the class scores are 0 and the
    loss sits at ln 2; a random-init network therefore trains its BatchNorm (ImageNet-initialised ones keep
    theirs frozen)."""
    from aesipe.models.aesipe_net import build_aesipe

    torch.manual_seed(0)
    random_init = build_aesipe(make_cfg(tmp_path / "r"), 3)  # tiny_overrides: model.no_pretrained=true
    frozen = AESIPENet(3, "mobilenet_v2", no_pretrained=True, pamr_backend="reference")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in random_init.backbone.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.backbone.modules())
    image = torch.randn(4, 3, 48, 48)
    assert frozen.backbone(image)[3].abs().max() < 1e-3  # the failure this guards against
    assert random_init.train().backbone(image)[3].std() > 0.1

    batch = {"image": image, "labels": torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]),
             "valid": torch.ones(4, 48, 48)}
    backbone, new = random_init.parameter_groups()
    opt = engine.build_sgd(engine.param_groups([backbone, new], [0.01, 0.1], 1e-4), 0.01, 0.9, 1e-4)
    losses = []
    for _ in range(5):
        out = stage1.stage1_losses(random_init, batch)
        losses.append(out["loss_cls"].item())
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert losses[-1] < losses[0] - 0.01 and losses[-1] < math.log(2) - 0.01


def test_train_aug_of_a_folder_dataset_shares_the_train_cam_files(make_cfg, tmp_path):
    from aesipe.train.stages.evaluate import cam_dir

    cfg = make_cfg(tmp_path / "run")
    assert cam_dir(cfg, "train_aug") == cam_dir(cfg, "train") == tmp_path / "run" / "cams" / "train"
    assert cam_dir(cfg, "val") != cam_dir(cfg, "train")


def test_average_last_is_the_mean_of_the_last_steps_weights(tmp_path, make_cfg):
    # Constant lr (poly 0): the first 3 steps of a 4-step run are a 3-step run, so the average of the last
    # half of 4 steps is exactly (weights after step 3 + weights after step 4) / 2.
    three = stage1.train_stage1(make_cfg(tmp_path / "three", **{"train.max_steps": 3, "train.poly_power": 0}))
    four = make_cfg(tmp_path / "four", **{"train.max_steps": 4, "train.poly_power": 0, "train.average_last": 0.5})
    averaged = ckpt_io.load_checkpoint(stage1.train_stage1(four), kind="aesipe")
    last = ckpt_io.load_checkpoint(tmp_path / "four/stage1/checkpoints/last.pt")["model"]
    after_three = _weights(three)
    assert averaged["averaged_steps"] == 2 and "average" not in averaged
    moved = [k for k in last if last[k].is_floating_point() and not torch.equal(last[k], after_three[k])]
    buffers = [k for k in moved if "running_" in k]  # BatchNorm statistics (this random-init network trains them)
    assert len(moved) > len(buffers)  # the last step changed weights, so the average differs from the last weights
    for key in moved:  # weights averaged; statistics are the last ones
        torch.testing.assert_close(averaged["model"][key], last[key] if key in buffers else (after_three[key] + last[key]) / 2)


def test_resume_restores_the_running_average(tmp_path, make_cfg, monkeypatch):
    settings = {"train.max_steps": 6, "train.average_last": 0.5}  # averages steps 4-6; checkpoints at 2, 4, 6
    straight = stage1.train_stage1(make_cfg(tmp_path / "straight", **settings))
    real_losses, calls = stage1.stage1_losses, {"n": 0}

    def dies_at_step_6(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_losses(*args, **kwargs)

    monkeypatch.setattr(stage1, "stage1_losses", dies_at_step_6)
    cfg = make_cfg(tmp_path / "killed", **settings)
    with pytest.raises(KeyboardInterrupt):
        stage1.train_stage1(cfg)
    assert ckpt_io.load_checkpoint(tmp_path / "killed/stage1/checkpoints/last.pt")["average"]["n_averaged"] == 1
    monkeypatch.setattr(stage1, "stage1_losses", real_losses)
    a, b = _weights(straight), _weights(stage1.train_stage1(cfg))
    assert all(torch.equal(a[k], b[k]) for k in a)
