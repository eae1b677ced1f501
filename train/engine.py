"""Training helpers shared by every stage: seeding, devices, DDP, sampling, optimisers, AMP, logging.

``loop.train_loop`` puts them together: resumable, checkpointed, logged training of any model with any
loss; stage 1, IRN and DeepLabV3 all use it.

DDP: launch with ``torchrun --nproc_per_node=N -m aesipe.train.cli train RUN``; ``init_distributed()``
reads torchrun's RANK/WORLD_SIZE/LOCAL_RANK. Rank 0 alone logs, shows progress and writes checkpoints.
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist

from aesipe.utils.errors import UserError


# ---------------------------------------------------------------- seeding and devices
def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python/numpy/torch; with ``deterministic`` the same seed gives the same loss curve on CPU
    (and on one GPU up to the few CUDA kernels torch has no deterministic version of: warned, not fatal)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def select_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto``: CUDA when present else CPU; ``cuda:N`` that GPU (under torchrun each rank takes its
    local rank's GPU); ``cuda`` without a GPU is a user error (exit 2)."""
    kind, _, index = name.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (index and (kind != "cuda" or not index.isdigit())):
        raise UserError(f"runtime.device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"runtime.device={name} was asked for but no CUDA GPU is visible (use auto or cpu)")
    gpu = local_rank if local_rank is not None else int(index or 0)
    if gpu >= torch.cuda.device_count():
        raise UserError(f"runtime.device={name}: only {torch.cuda.device_count()} GPU(s) are visible (cuda:0 ...)")
    torch.cuda.set_device(gpu)
    return torch.device("cuda", gpu)


# ---------------------------------------------------------------- distributed
@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join the process group torchrun set up (NCCL on GPUs, Gloo on CPU); a no-op for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_cuda = not device_name.startswith("cpu") and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return info


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class ResumableSampler(torch.utils.data.Sampler[int]):
    """Shuffled (seed + epoch) and sharded over ranks like ``DistributedSampler``, and able to start
    mid-epoch: ``set_epoch(e, start=k)`` skips this rank's first k samples, so a resumed run sees exactly
    the samples the interrupted one would have seen next."""

    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.per_rank = math.ceil(num_samples / world_size)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def epoch_indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        order += order[: self.per_rank * self.world_size - len(order)]  # pad so every rank gets as many
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start


def make_sampler(num_samples: int, shuffle: bool, seed: int, info: DistInfo | None = None) -> ResumableSampler:
    info = info or DistInfo()
    return ResumableSampler(num_samples, shuffle, seed, info.rank, info.world_size)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive numpy/python seeds from the per-worker torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# ---------------------------------------------------------------- optimisation
def total_steps(num_images: int, batch_size: int, epochs: int, max_steps: int | None, world_size: int = 1) -> int:
    """Optimiser steps of a run: epochs x full batches per epoch (per process), capped by ``max_steps``."""
    per_epoch = -(-num_images // world_size) // batch_size
    steps = epochs * per_epoch
    return min(steps, max_steps) if max_steps is not None else steps


def poly_lr_lambda(max_steps: int, power: float = 0.9):
    """``lr = base * (1 - step / max_steps) ** power`` (the reference PolyOptimizer's schedule)."""
    return lambda step: (1.0 - min(step, max_steps) / max(max_steps, 1)) ** power


def make_poly_scheduler(optimizer: torch.optim.Optimizer, max_steps: int, power: float = 0.9):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lr_lambda(max_steps, power))


def param_groups(
    groups: Sequence[Iterable[torch.nn.Parameter]], lrs: Sequence[float], weight_decay: float
) -> list[dict]:
    """SGD param groups (e.g. backbone at lr, new layers at 10 lr); frozen parameters are left out."""
    out = []
    for params, lr in zip(groups, lrs, strict=True):
        trainable = [p for p in params if p.requires_grad]
        if trainable:
            out.append({"params": trainable, "lr": lr, "weight_decay": weight_decay})
    if not out:
        raise ValueError("no trainable parameters")
    return out


def resolve_lr(lr: float | None, reference: bool) -> float:
    """A stage's backbone lr: as given, else the paper's 0.01 (momentum 0.9) or, reproducing the authors'
    optimiser, the code's 0.1 (momentum 1e-4): about the same effective step lr / (1 - momentum)."""
    from aesipe.config import PAPER_LR, REFERENCE_LR

    if lr is not None:
        return float(lr)
    return REFERENCE_LR if reference else PAPER_LR


def build_sgd(groups: list[dict], lr: float, momentum: float, weight_decay: float, reference: bool = False):
    """SGD over ``groups`` (each with its own lr and weight_decay).

    ``reference=True`` reproduces the authors' PolyOptimizer, which calls ``SGD.__init__(params, lr,
    weight_decay)``: SGD's third positional parameter is ``momentum``, so it trains with momentum =
    weight_decay (1e-4), while each group's own ``weight_decay`` entry (1e-4) is still applied.
    """
    if reference:
        momentum = weight_decay
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


# ---------------------------------------------------------------- mixed precision
def autocast(device: torch.device, enabled: bool = True):
    """float16 autocast on CUDA; a no-op context on CPU (AMP there is slower and not asked for)."""
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled and device.type == "cuda")


def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(device.type, enabled=enabled and device.type == "cuda")
