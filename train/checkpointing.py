"""Checkpoints: the one dict format of docs/ARCHITECTURE.md, written atomically, with RNG states.

``last.pt`` (resumable: optimizer, scheduler, scaler, RNG, step) lives in ``<stage>/checkpoints/``;
``final.pt`` carries only what inference and export need. Both are plain ``torch.save`` dicts, so they
load without aesipe; aesipe reads them with ``aesipe.checkpoint_format.read_checkpoint`` (no arbitrary unpickling).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from aesipe import __version__
from aesipe.checkpoint_format import FORMAT, KINDS, VERSION, read_checkpoint
from aesipe.utils.atomic import atomic_save

LAST_NAME = "last.pt"
FINAL_NAME = "final.pt"
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DistributedDataParallel / DataParallel wrappers."""
    return getattr(model, "module", model)


def rng_state() -> dict[str, Any]:
    """Every random generator a training step may draw from (restored on resume)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_checkpoint(
    *,
    kind: str,
    model: torch.nn.Module,
    config: Mapping[str, Any],
    class_names: Sequence[str],
    step: int = 0,
    epoch: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    with_rng: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "config": dict(config),
        "class_names": list(class_names),
        "step": int(step),
        "epoch": int(epoch),
        "aesipe_version": __version__,
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        ckpt["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        ckpt["scaler"] = scaler.state_dict()
    if with_rng:
        ckpt["rng"] = rng_state()
    if extra:
        ckpt.update(extra)
    return ckpt


def save_checkpoint(path: str | Path, checkpoint: Mapping[str, Any]) -> Path:
    """Atomic: a kill during the write leaves the previous file intact."""
    path = Path(path)
    atomic_save(path, lambda handle: torch.save(dict(checkpoint), handle))
    return path


def write_final(path: str | Path, checkpoint: Mapping[str, Any]) -> Path:
    """``final.pt``: the checkpoint without optimizer/scheduler/scaler/RNG state."""
    return save_checkpoint(path, {k: v for k, v in checkpoint.items() if k not in RESUME_KEYS})


def load_checkpoint(path: str | Path, kind: str | None = None, map_location: Any = "cpu") -> dict[str, Any]:
    """Load and check an aesipe checkpoint (``aesipe.checkpoint_format``: safe unpickling); a wrong file is a
    one-line ``UserError``."""
    return read_checkpoint(path, kind, map_location)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The resumable checkpoint of a stage (``<dir>/last.pt``), or None when training has not saved one."""
    path = Path(directory) / LAST_NAME
    return path if path.is_file() else None
