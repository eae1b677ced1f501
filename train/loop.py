"""The generic training loop every stage uses (stage 1, IRN, DeepLabV3): resumable, checkpointed, logged.

``train_loop(model, optimizer, scheduler, dataset, loss_fn, LoopSpec(...), device, config, class_names)``;
the building blocks (seeding, devices, DDP, samplers, optimisers, AMP) live in ``engine``.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.distributed as dist

from aesipe.config import RuntimeConfig, SolverConfig
from aesipe.utils.atomic import remove_temporaries
from aesipe.utils.errors import UserError

from . import engine
from .engine import DistInfo, autocast, barrier, grad_scaler, make_sampler, seed_worker


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
    average_from: int | None = None
    """Average the weights of every step after this one (uniform) and write the average as ``final.pt``."""


def solver_setup(
    solver: SolverConfig,
    section: str,
    param_sets: Sequence[Any],
    lr_mults: Sequence[float],
    num_images: int,
    info: DistInfo,
    runtime: RuntimeConfig,
    *,
    stage_dir: Path,
    kind: str,
    workers: int,
    grad_clip: float | None = None,
) -> tuple[torch.optim.Optimizer, Any, LoopSpec]:
    """Optimiser, poly scheduler and loop settings of a stage from its ``SolverConfig`` section.

    ``param_sets[i]`` trains at lr x ``lr_mults[i]`` (backbone first, at x1); frozen parameters are left out."""
    lr = engine.resolve_lr(solver.lr, solver.reference_optimizer)
    groups = engine.param_groups(param_sets, [lr * mult for mult in lr_mults], solver.weight_decay)
    optimizer = engine.build_sgd(groups, lr, solver.momentum, solver.weight_decay, reference=solver.reference_optimizer)
    max_steps = engine.total_steps(num_images, solver.batch_size, solver.epochs, solver.max_steps, info.world_size)
    if max_steps < 1:
        raise UserError(f"{section}: {num_images} images make no full batch of {section}.batch_size={solver.batch_size}"
                        + (f" on each of {info.world_size} processes" if info.world_size > 1 else ""))
    scheduler = engine.make_poly_scheduler(optimizer, max_steps, solver.poly_power)
    average_from = max_steps - max(1, round(solver.average_last * max_steps)) if solver.average_last > 0 else None
    spec = LoopSpec(
        stage_dir=stage_dir, kind=kind, max_steps=max_steps, batch_size=solver.batch_size,
        checkpoint_every=solver.checkpoint_every, log_every=solver.log_every, grad_clip=grad_clip or None,
        amp=runtime.amp, seed=solver.seed, workers=workers, desc=section if section != "train" else "stage1",
        average_from=average_from,
    )
    return optimizer, scheduler, spec


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

    from . import checkpointing as ckpt_io

    info = info or DistInfo()
    final_path = spec.stage_dir / ckpt_io.FINAL_NAME
    ckpt_dir = spec.stage_dir / "checkpoints"
    sampler = make_sampler(len(dataset), True, spec.seed, info)
    steps_per_epoch = len(sampler) // spec.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"{len(dataset)} training images are fewer than one batch of {spec.batch_size} per process")
    scaler = grad_scaler(device, spec.amp)
    model.to(device)
    if info.is_main:
        remove_temporaries(ckpt_dir)  # a checkpoint write cut off by a kill (the previous file is intact)
    step = 0
    average = None if spec.average_from is None else torch.optim.swa_utils.AveragedModel(model)
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
        if average is not None and "average" in state:
            average.load_state_dict(state["average"])
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def snapshot() -> dict:
        return ckpt_io.make_checkpoint(
            kind=spec.kind, model=model, config=config, class_names=class_names, step=step,
            epoch=step // steps_per_epoch, optimizer=optimizer, scheduler=scheduler, scaler=scaler, with_rng=True,
            extra=None if average is None else {"average": average.state_dict()},
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
                if average is not None and step > spec.average_from:
                    average.update_parameters(ckpt_io.unwrap(model))
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
            if average is not None:  # the average is the result; the last weights stay in last.pt
                final = {k: v for k, v in final.items() if k != "average"}
                final["model"] = {k: v.detach().cpu() for k, v in average.module.state_dict().items()}
                final["averaged_steps"] = int(average.n_averaged)
            ckpt_io.write_final(final_path, final)
        barrier()
    finally:
        bar.close()
        if logger is not None:
            logger.close()
    return final_path
