"""aesipe-train and aesipe-export under a user's ordinary mistakes and kills: one line and exit 2 for every
mistake, nothing written before the checks, nothing corrupt or lost beyond the last checkpoint interval."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from aesipe.export.cli import app as export_app
from aesipe.train import checkpointing as ckpt_io
from aesipe.train.cli import app

runner = CliRunner()
BIN = Path(sys.executable).parent


def _one_error_line(result, *needles: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip() and "%|" not in line]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in result.output, lines
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def trained_run(tmp_path, make_cfg):
    """A tiny stage-1 run (4 steps)."""
    from aesipe.train.runconfig import save_run_config
    from aesipe.train.stages.stage1 import train_stage1

    cfg = make_cfg(tmp_path / "run")
    save_run_config(cfg)
    train_stage1(cfg)
    return tmp_path / "run"


@pytest.mark.parametrize("override, key", [
    ("train.batch_size=0", "train.batch_size must be at least 1"),
    ("train.max_steps=-5", "train.max_steps must be at least 1"),
    ("train.lr=-0.1", "train.lr must be positive"),
    ("cam.scales=", "cam.scales must list at least one value"),
    ("runtime.device=gpu", "runtime.device must be auto, cpu, cuda or cuda:N"),
    ("model.pamr_dilations=0,2", "model.pamr_dilations must be positive"),
])
def test_bad_values_are_refused_when_the_config_is_built(tmp_path, make_overrides, override, key):
    result = runner.invoke(app, ["train", str(tmp_path / "run"), *make_overrides(), override])
    _one_error_line(result, key)
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_file_where_a_folder_belongs(tmp_path, make_overrides):
    (tmp_path / "afile").write_text("x")
    _one_error_line(runner.invoke(app, ["train", str(tmp_path / "afile"), *make_overrides()]), "is a file")
    _one_error_line(runner.invoke(app, ["synth", str(tmp_path / "afile")]), "is a file")


def test_changing_the_architecture_of_a_trained_run_is_refused(trained_run, make_overrides):
    config = (trained_run / "config.toml").read_bytes()
    result = runner.invoke(app, ["train", str(trained_run), "model.backbone=resnet50"])
    _one_error_line(result, "model.backbone=mobilenet_v2", "model.backbone=resnet50", "another run directory")
    assert (trained_run / "config.toml").read_bytes() == config  # the run directory is untouched
    result = runner.invoke(app, ["make-cam", str(trained_run), "model.no_pretrained=false"])
    _one_error_line(result, "model.no_pretrained")


def test_make_cam_with_a_folder_as_checkpoint_says_so(trained_run):
    result = runner.invoke(app, ["make-cam", str(trained_run), "--checkpoint", str(trained_run / "stage1")])
    _one_error_line(result, "is a folder", "final.pt")


def test_export_reads_a_resumable_checkpoint(trained_run, tmp_path):
    # TorchScript keeps this quick: what matters is that last.pt (optimiser and RNG state inside) loads safely.
    result = runner.invoke(export_app, [str(trained_run / "stage1" / "checkpoints" / "last.pt"), str(tmp_path / "pl.pt"),
                                        "--format", "torchscript", "--scales", "1.0", "--no-flip"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pl.pt").is_file()


def test_export_messages_point_at_the_right_fix(trained_run):
    result = runner.invoke(export_app, [str(trained_run / "stage1" / "final.pt"), "--what", "segmenter"])
    _one_error_line(result, "--what pseudo-labeller")
    result = runner.invoke(export_app, [str(trained_run)])  # no segmenter in this run
    _one_error_line(result, "aesipe-train seg", "aesipe-train pipeline")
    assert "aesipe-train all" not in result.output


def test_typer_usage_errors_of_aesipe_train_are_one_line(tmp_path):
    result = subprocess.run([str(BIN / "aesipe-train"), "synth", str(tmp_path / "x"), "--images", "many"],
                            capture_output=True, text=True)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Invalid value for '--images'" in lines[0]


_KILL_AT_STEP = """
import os, signal, sys
from aesipe.train.cli import main
{patch}
sys.argv = ["aesipe-train", "train", *sys.argv[1:]]
main()
"""
# Dies at the fourth step, after the checkpoint of step 2 (checkpoint_every=2).
_MID_RUN = """
from aesipe.train.stages import stage1
real_losses, calls = stage1.stage1_losses, []
def losses(*a, **k):
    calls.append(1)
    if len(calls) == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_losses(*a, **k)
stage1.stage1_losses = losses
"""
# Dies while writing the step-4 checkpoint: half of the file's bytes are out, the rename never happens.
_MID_WRITE = """
from aesipe.utils import atomic
real_open, writes = atomic.atomic_open, []
import contextlib
@contextlib.contextmanager
def dying_open(path, suffix=".tmp"):
    with real_open(path, suffix) as handle:
        if str(path).endswith("last.pt"):
            writes.append(path)
        if len(writes) == 2 and str(path).endswith("last.pt"):
            handle.write(b"half a checkpoint")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        yield handle
atomic.atomic_open = dying_open
"""


@pytest.mark.slow
@pytest.mark.parametrize("patch", [_MID_RUN, _MID_WRITE], ids=["mid-run", "mid-checkpoint-write"])
def test_sigkill_then_rerun_finishes_as_if_never_killed(tmp_path, make_overrides, patch):
    overrides = make_overrides(**{"train.max_steps": 6})
    straight = runner.invoke(app, ["train", str(tmp_path / "straight"), *overrides])
    assert straight.exit_code == 0, straight.output
    run = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", _KILL_AT_STEP.format(patch=patch), str(run), *overrides],
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last = run / "stage1" / "checkpoints" / "last.pt"
    assert ckpt_io.load_checkpoint(last)["step"] == 2  # the previous checkpoint, intact
    assert not (run / "stage1" / "final.pt").exists()
    again = runner.invoke(app, ["train", str(run), *overrides])
    assert again.exit_code == 0, again.output
    a = ckpt_io.load_checkpoint(tmp_path / "straight" / "stage1" / "final.pt")["model"]
    b = ckpt_io.load_checkpoint(run / "stage1" / "final.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not [p for p in (run / "stage1").rglob(".*") if p.is_file()]  # no temporary file left
