"""Training helpers: schedule, optimiser (incl. the reference bug), sampler, logger, checkpoints."""
from __future__ import annotations

import csv

import pytest
import torch

from aesipe.config import RunConfig, from_dict, to_dict
from aesipe.train import checkpointing as ckpt_io
from aesipe.train import engine, loop
from aesipe.utils.errors import UserError


def test_poly_schedule_values():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [param], "lr": 0.1}], lr=0.1)
    sched = engine.make_poly_scheduler(opt, max_steps=10, power=0.9)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(0.1)
    assert seen[5] == pytest.approx(0.1 * 0.5**0.9)
    assert seen[9] == pytest.approx(0.1 * 0.1**0.9)


def _two_sgd_steps(reference: bool) -> tuple[torch.Tensor, dict]:
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    groups = engine.param_groups([[param]], [0.5], weight_decay=1e-4)
    opt = engine.build_sgd(groups, 0.5, momentum=0.9, weight_decay=1e-4, reference=reference)
    for grad in (torch.tensor([0.3, 0.1]), torch.tensor([-0.2, 0.4])):
        param.grad = grad.clone()
        opt.step()
    return param.detach(), opt.param_groups[0]


@pytest.mark.parametrize("reference, momentum", [(False, 0.9), (True, 1e-4)])
def test_sgd_momentum_and_weight_decay_by_hand(reference, momentum):
    param, group = _two_sgd_steps(reference)
    assert group["momentum"] == pytest.approx(momentum) and group["weight_decay"] == pytest.approx(1e-4)
    # Hand-written SGD: d = g + wd p; buf = d (first step), then m buf + d; p -= lr buf.
    p = torch.tensor([1.0, -2.0])
    d1 = torch.tensor([0.3, 0.1]) + 1e-4 * p
    p = p - 0.5 * d1
    d2 = torch.tensor([-0.2, 0.4]) + 1e-4 * p
    p = p - 0.5 * (momentum * d1 + d2)
    assert torch.allclose(param, p, atol=1e-7)


def test_param_groups_skip_frozen_parameters():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    groups = engine.param_groups([[a, b], [b]], [0.1, 1.0], 1e-4)
    assert len(groups) == 1 and groups[0]["params"] == [a] and groups[0]["lr"] == 0.1


def test_resumable_sampler_resumes_mid_epoch_and_shards():
    full = engine.ResumableSampler(10, shuffle=True, seed=3)
    full.set_epoch(2)
    order = list(full)
    assert sorted(order) == list(range(10))
    resumed = engine.ResumableSampler(10, shuffle=True, seed=3)
    resumed.set_epoch(2, start=4)
    assert list(resumed) == order[4:] and len(resumed) == 6
    full.set_epoch(3)
    assert list(full) != order  # a new permutation each epoch
    shards = [engine.ResumableSampler(7, True, 0, rank, 2) for rank in range(2)]
    for s in shards:
        s.set_epoch(0)
    a, b = list(shards[0]), list(shards[1])
    assert len(a) == len(b) == 4 and set(a) | set(b) == set(range(7))


def test_metric_logger_drops_rows_past_the_resumed_step(tmp_path):
    path = tmp_path / "log.csv"
    logger = loop.MetricLogger(path, tensorboard=False)
    for step in range(1, 6):
        logger.log(step, {"loss": float(step)})
    logger.close()
    resumed = loop.MetricLogger(path, resume_step=3, tensorboard=False)
    resumed.log(4, {"loss": 40.0, "extra": 1.0})
    resumed.close()
    rows = list(csv.DictReader(path.open()))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[3]["loss"] == "40" and rows[3]["extra"] == "1"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_select_device_without_gpu():
    assert engine.select_device("auto").type == "cpu"
    with pytest.raises(UserError, match="no CUDA GPU"):
        engine.select_device("cuda")


def test_autocast_and_scaler_are_off_on_cpu():
    device = torch.device("cpu")
    assert not engine.grad_scaler(device).is_enabled()
    with engine.autocast(device):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_checkpoint_round_trip_config_and_rng(tmp_path):
    cfg = from_dict(RunConfig, {"run_dir": str(tmp_path), "model": {"backbone": "mobilenet_v2"}, "train": {"lr": 0.02}})
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(5)
    state = ckpt_io.make_checkpoint(kind="aesipe", model=model, config=to_dict(cfg), class_names=["background", "a"],
                                    step=7, epoch=1, optimizer=opt, with_rng=True)
    expected_next = torch.rand(3)
    ckpt_io.save_checkpoint(tmp_path / "checkpoints" / "last.pt", state)
    assert ckpt_io.latest_checkpoint(tmp_path / "checkpoints") == tmp_path / "checkpoints" / "last.pt"
    assert ckpt_io.latest_checkpoint(tmp_path / "nothing") is None
    loaded = ckpt_io.load_checkpoint(tmp_path / "checkpoints" / "last.pt", kind="aesipe")
    assert from_dict(RunConfig, loaded["config"]) == cfg
    assert loaded["step"] == 7 and loaded["class_names"] == ["background", "a"]
    ckpt_io.restore_rng(loaded["rng"])
    assert torch.equal(torch.rand(3), expected_next)
    final = ckpt_io.write_final(tmp_path / "final.pt", loaded)
    assert not {"optimizer", "rng"} & set(ckpt_io.load_checkpoint(final))
    with pytest.raises(UserError, match="holds a 'aesipe' model, expected 'irn'"):
        ckpt_io.load_checkpoint(final, kind="irn")


def test_load_checkpoint_rejects_foreign_files(tmp_path):
    torch.save({"net": {}}, tmp_path / "authors.pth")
    with pytest.raises(UserError, match="import-checkpoint"):
        ckpt_io.load_checkpoint(tmp_path / "authors.pth")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        ckpt_io.load_checkpoint(tmp_path / "junk.pt")
