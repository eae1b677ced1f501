"""DDP through torchrun, on CPU with the Gloo backend: the multi-GPU code path, minus the GPUs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.slow
def test_two_process_torchrun_training_writes_one_checkpoint(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun not installed")
    from aesipe.data.synth import generate

    generate(tmp_path / "data", num_train=8, num_val=2, size=48, seed=3, num_classes=3)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        str(torchrun if torchrun.exists() else shutil.which("torchrun")), "--nproc_per_node=2",
        "-m", "aesipe.train.cli", "train", str(tmp_path / "run"),
        f"data.root={tmp_path / 'data'}", "data.workers=0", "model.backbone=mobilenet_v2",
        "model.no_pretrained=true", "train.batch_size=2", "train.crop_size=48", "train.resize_long=40,56",
        "train.max_steps=2", "train.checkpoint_every=1",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("wrote ") == 1  # rank 0 alone reports
    final = torch.load(tmp_path / "run" / "stage1" / "final.pt", map_location="cpu", weights_only=False)
    assert final["step"] == 2 and final["kind"] == "aesipe"
    assert not any(key.startswith("module.") for key in final["model"])  # saved unwrapped from DDP
