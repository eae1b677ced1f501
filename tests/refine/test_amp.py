"""Mixed precision without a GPU: one optimiser step of stage 1, IRN and the segmenter under autocast.

A CUDA run with ``runtime.amp`` trains every stage through ``train_loop``'s AMP path: the loss under
``autocast``, then ``scaler.scale(loss).backward()``, ``scaler.step``, ``scaler.update``. On the CPU that path
is off (``engine.autocast``/``engine.grad_scaler`` return disabled objects there), so here the loop's two
hooks are switched to their CPU forms: autocast in bfloat16 (the CPU's reduced-precision dtype; CUDA uses
float16) and an enabled ``GradScaler``. The models' code then runs exactly as under CUDA AMP: convolutions in
the reduced dtype, the float32 regions (correlations, PAMR) in float32. Each test checks that autocast really
was on (convolution outputs in bfloat16), that the step was taken with finite losses and gradients (the
scaler did not skip it), and that the weights stay finite float32.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from aesipe.train import loop

AMP_DTYPE = torch.bfloat16


@pytest.fixture
def cpu_amp(monkeypatch):
    """Switch train_loop's autocast and grad scaler on for the CPU; yields the dtypes of conv outputs seen."""
    conv_dtypes: list[torch.dtype] = []

    def autocast(device: torch.device, enabled: bool = True):
        assert device.type == "cpu" and enabled, "runtime.amp must be on for this test"
        return torch.autocast(device_type="cpu", dtype=AMP_DTYPE, enabled=True)

    def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(device.type, enabled=enabled)

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d) and isinstance(output, torch.Tensor):
            conv_dtypes.append(output.dtype)

    monkeypatch.setattr(loop, "autocast", autocast)
    monkeypatch.setattr(loop, "grad_scaler", grad_scaler)
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        yield conv_dtypes
    finally:
        handle.remove()


def _check_step(stage_dir: Path, conv_dtypes: list[torch.dtype]) -> None:
    assert conv_dtypes and set(conv_dtypes) == {AMP_DTYPE}, set(conv_dtypes)  # autocast was on for every conv
    with (stage_dir / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in rows] == [1]
    losses = {k: float(v) for k, v in rows[0].items() if k.startswith("loss")}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    state = torch.load(stage_dir / "checkpoints" / "last.pt", weights_only=False)
    # A non-finite gradient makes the scaler skip the step and halve its scale: it must still be the initial one.
    assert state["scaler"]["scale"] == torch.amp.GradScaler("cpu").get_scale()
    weights = [v for v in state["model"].values() if v.is_floating_point()]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights)


def test_stage1_step_under_autocast(cpu_amp, monkeypatch, run_dir, tiny_data, tiny_config):
    from aesipe.models import aesipe_net
    from aesipe.train.stages.stage1 import train_stage1

    pamr_calls = []
    real_pamr = aesipe_net.pamr_kept_channels

    def spy(image, mask, *args):
        out = real_pamr(image, mask, *args)
        pamr_calls.append((image.dtype, mask.dtype, torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    monkeypatch.setattr(aesipe_net, "pamr_kept_channels", spy)
    train_stage1(tiny_config(run_dir, tiny_data, "train.max_steps=1", "model.pamr_backend=reference"))
    _check_step(run_dir / "stage1", cpu_amp)
    # PAMR runs in float32 with autocast off (AESIPENet's float32 region), as documented.
    assert pamr_calls and set(pamr_calls) == {(torch.float32, torch.float32, False, torch.float32)}


def test_irn_step_under_autocast(cpu_amp, run_dir, tiny_data, tiny_config, labels_from_masks):
    from aesipe.train.stages.irn import train_irn

    cfg = tiny_config(run_dir, tiny_data, "irn.max_steps=1")
    labels_from_masks(cfg, "train", "ir_labels", unsure_border=True)
    train_irn(cfg)
    _check_step(run_dir / "irn", cpu_amp)


def test_segmenter_step_under_autocast(cpu_amp, run_dir, tiny_data, tiny_config, labels_from_masks):
    from aesipe.train.stages.seg import train_seg

    cfg = tiny_config(run_dir, tiny_data, "seg.max_steps=1")
    labels_from_masks(cfg, "train", "seg_labels")
    train_seg(cfg)
    _check_step(run_dir / "seg", cpu_amp)
