"""Reading aesipe checkpoint files, safely: the one loader of training (resume, make-cam) and export.

A checkpoint is a ``torch.save`` dict (docs/ARCHITECTURE.md): tensors, plain config dicts, optimiser state
and the RNG states that make resuming exact (numpy's is an array). It is read with
``torch.load(weights_only=True)``, which unpickles nothing but tensors, containers and the three numpy
names an RNG state needs, so a checkpoint from elsewhere cannot run code. Resumable ``last.pt`` files and
``final.pt`` files read alike (exporting mid-training is a normal wish).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .utils.errors import UserError

FORMAT = "aesipe-checkpoint"
VERSION = 1
KINDS = ("aesipe", "irn", "deeplabv3")
KIND_NAMES = {"aesipe": "stage-1 (AE-SIPE)", "irn": "IRN", "deeplabv3": "segmenter (DeepLabV3)"}


def _numpy_globals() -> list:
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    # An RNG state pickles as an array: its reconstructor, the array and dtype types, and the dtype classes.
    dtype_classes = [type(np.dtype(name)) for name in ("uint32", "int64", "float64", "uint8", "int32", "float32")]
    return [_reconstruct, np.ndarray, np.dtype, *dtype_classes]


def load_torch_file(path: str | Path, what: str, map_location: Any = "cpu", rng_states: bool = False) -> Any:
    """A ``torch.save`` file a user handed us (a checkpoint, pretrained weights), read as data: tensors,
    containers and plain values only (``weights_only=True``; ``rng_states`` also admits the numpy arrays an
    RNG state pickles as), so no file can run code. Missing, unreadable or unsafe: one ``UserError`` naming
    ``what``."""
    import torch

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder: give the {what} file")
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_globals() if rng_states else []):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt, truncated, not a torch file, or objects we refuse to unpickle
        reason = str(exc).splitlines()[0][:160] if "weights_only" not in str(exc) else "it holds objects other than tensors and plain data"
        raise UserError(f"cannot read {what} {path} ({type(exc).__name__}: {reason})", 1) from None


def read_checkpoint(path: str | Path, kind: str | None = None, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path``, checked (format, version, ``kind``); a wrong file is one ``UserError``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder: give a checkpoint file (e.g. {path / 'final.pt'})")
    ckpt = load_torch_file(path, "checkpoint", map_location, rng_states=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not an aesipe checkpoint (for the authors' SIPE/AE-SIPE files use "
                        "`aesipe-train import-checkpoint`)")
    if ckpt.get("version", 0) > VERSION:
        raise UserError(f"{path} has checkpoint version {ckpt['version']}; this aesipe reads up to {VERSION}")
    missing = [key for key in ("kind", "model", "config", "class_names") if key not in ckpt]
    if missing:
        raise UserError(f"{path} is not a complete aesipe checkpoint (no {', '.join(missing)})")
    if kind is not None and ckpt["kind"] != kind:
        raise UserError(f"{path} holds a {ckpt['kind']!r} model, expected {kind!r} (a {KIND_NAMES.get(kind, kind)} "
                        f"checkpoint, not a {KIND_NAMES.get(ckpt['kind'], 'unknown')} one)")
    return ckpt
