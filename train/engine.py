"""Training helpers shared by every stage: seeding, devices, DDP, sampling, optimisers, AMP, logging.

``train_loop`` at the end puts them together: resumable, checkpointed, logged training of any model
with any loss. Stage 2 (IRN) and stage 3 (DeepLabV3) reuse it unchanged.

DDP: launch with ``torchrun --nproc_per_node=N -m aesipe.train.cli train RUN``; ``init_distributed()``
reads torchrun's RANK/WORLD_SIZE/LOCAL_RANK. Rank 0 alone logs, shows progress and writes checkpoints.
"""
from __future__ import annotations

import csv
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

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
    """``auto``: CUDA when present else CPU; ``cuda`` without a GPU is a user error (exit 2)."""
    if name not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but no CUDA GPU is visible (use device=auto or cpu)")
    index = local_rank if local_rank is not None else 0
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


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
        use_cuda = device_name != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return info


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


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


# ---------------------------------------------------------------- logging
class MetricLogger:
    """Appends rows to ``log.csv`` (and TensorBoard events when tensorboard is installed).

    On resume it first drops rows past the resumed step, so a killed run leaves no duplicate steps."""

    def __init__(self, csv_path: str | Path, resume_step: int = 0, tensorboard: bool = True):
        self.path = Path(csv_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] | None = None
        self.rows: list[dict] = []
        if self.path.is_file() and resume_step > 0:
            with self.path.open(newline="") as handle:
                self.rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]
            if self.rows:
                self.fields = list(self.rows[0].keys())
        self._rewrite()
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.path.parent / "tensorboard"), purge_step=resume_step + 1)
            except ImportError:  # tensorboard is optional
                self.writer = None

    def _rewrite(self) -> None:
        with self.path.open("w", newline="") as handle:
            if self.fields:
                writer = csv.DictWriter(handle, self.fields)
                writer.writeheader()
                writer.writerows(self.rows)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        row = {"step": step, **{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()}}
        if self.fields is None or set(row) - set(self.fields):
            self.fields = list(dict.fromkeys([*(self.fields or []), *row]))
            self.rows.append(row)
            self._rewrite()
        else:
            self.rows.append(row)
            with self.path.open("a", newline="") as handle:
                csv.DictWriter(handle, self.fields).writerow(row)
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def reduce_mean(values: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """Average logged scalars over ranks (only at log steps: one small all-reduce)."""
    if not dist.is_initialized():
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return dict(zip(keys, tensor.tolist()))


# ---------------------------------------------------------------- the generic loop
@dataclass(frozen=True)
class LoopSpec:
    stage_dir: Path
    """``<run>/<stage>``: gets ``checkpoints/last.pt``, ``final.pt`` and ``log.csv``."""
    kind: str
    """Checkpoint kind (``aesipe`` | ``irn`` | ``deeplabv3``)."""
    max_steps: int
    batch_size: int
    checkpoint_every: int
    log_every: int = 10
    grad_clip: float | None = None
    amp: bool = True
    seed: int = 0
    workers: int = 0
    desc: str = "train"


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def train_loop(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    dataset: torch.utils.data.Dataset,
    loss_fn: Callable[[torch.nn.Module, Any], Mapping[str, torch.Tensor]],
    spec: LoopSpec,
    device: torch.device,
    config: Mapping[str, Any],
    class_names: Sequence[str],
    info: DistInfo | None = None,
) -> Path:
    """Train until ``spec.max_steps`` optimiser steps; returns ``<stage>/final.pt``.

    ``loss_fn(model, batch)`` returns scalar tensors, ``"loss"`` being the one to minimise (the others are
    logged). Resumes from ``checkpoints/last.pt`` (model, optimiser, scheduler, scaler, RNG, step, sampler
    position), so a killed run loses at most ``checkpoint_every`` steps and then follows the same curve.
    A dataset with ``set_epoch(e)`` is told each epoch (for per-epoch augmentation seeds).
    """
    from tqdm import tqdm

    from . import checkpoint as ckpt_io

    info = info or DistInfo()
    final_path = spec.stage_dir / ckpt_io.FINAL_NAME
    ckpt_dir = spec.stage_dir / "checkpoints"
    sampler = make_sampler(len(dataset), True, spec.seed, info)
    steps_per_epoch = len(sampler) // spec.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"{len(dataset)} training images are fewer than one batch of {spec.batch_size} per process")
    scaler = grad_scaler(device, spec.amp)
    model.to(device)
    step = 0
    last = ckpt_io.latest_checkpoint(ckpt_dir)
    if last is not None:
        state = ckpt_io.load_checkpoint(last, kind=spec.kind)
        ckpt_io.unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        ckpt_io.restore_rng(state["rng"])
        step = state["step"]
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def snapshot() -> dict:
        return ckpt_io.make_checkpoint(
            kind=spec.kind, model=model, config=config, class_names=class_names, step=step,
            epoch=step // steps_per_epoch, optimizer=optimizer, scheduler=scheduler, scaler=scaler, with_rng=True,
        )

    logger = MetricLogger(spec.stage_dir / "log.csv", resume_step=step) if info.is_main else None
    bar = tqdm(total=spec.max_steps, initial=step, desc=spec.desc, disable=not info.is_main, dynamic_ncols=True)
    model.train()
    try:
        while step < spec.max_steps:
            epoch, in_epoch = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch, start=in_epoch * spec.batch_size)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=spec.batch_size, sampler=sampler, num_workers=spec.workers, drop_last=True,
                pin_memory=device.type == "cuda", worker_init_fn=seed_worker, persistent_workers=False,
                generator=torch.Generator().manual_seed(spec.seed * 1000003 + step),
            )
            for batch in loader:
                with autocast(device, spec.amp):
                    losses = loss_fn(model, to_device(batch, device))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(losses["loss"]).backward()
                if spec.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(
                        [p for g in optimizer.param_groups for p in g["params"]], spec.grad_clip
                    )
                scaler.step(optimizer)
                scaler.update()
                lrs = [g["lr"] for g in optimizer.param_groups]
                if scheduler is not None:
                    scheduler.step()
                step += 1
                bar.update(1)
                if step % spec.log_every == 0 or step == spec.max_steps:
                    values = reduce_mean({k: float(v.detach()) for k, v in losses.items()}, device)
                    if logger is not None:
                        logger.log(step, {"epoch": epoch, **values, **{f"lr{i}": lr for i, lr in enumerate(lrs)}})
                        bar.set_postfix(loss=f"{values['loss']:.4f}")
                if step % spec.checkpoint_every == 0 and info.is_main:
                    ckpt_io.save_checkpoint(ckpt_dir / ckpt_io.LAST_NAME, snapshot())
                if step >= spec.max_steps:
                    break
        if info.is_main:
            final = snapshot()
            ckpt_io.save_checkpoint(ckpt_dir / ckpt_io.LAST_NAME, final)
            ckpt_io.write_final(final_path, final)
        barrier()
    finally:
        bar.close()
        if logger is not None:
            logger.close()
    return final_path
