"""TorchScript writer: trace the graph, store metadata as the extra file ``aesipe.json``.

Tracing (not scripting) because the stage-1 network and torchvision's DeepLabV3 are plain eager code;
shape arithmetic is traced as ``aten::size`` ops, so the file accepts any batch and size (the parity
check runs two sizes to prove it). When the traced graph calls the fused ``aesipe::pamr`` op, the file
records ``custom_ops`` and the op library path: a loader must ``torch.ops.load_library`` it first.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Mapping

import torch

from aesipe.contract import EXTRA_FILE

CUSTOM_OP_PREFIX = "aesipe::"


def trace(graph: torch.nn.Module, sample_inputs: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python ints are expected and checked by parity
        traced = torch.jit.trace(graph, sample_inputs, check_trace=False, strict=False)
        return torch.jit.freeze(traced.eval())


def custom_ops_in(module: torch.jit.ScriptModule) -> tuple[str, ...]:
    """Names of ``aesipe::`` ops the traced graph calls (they need the op library at load time)."""
    graph = module.inlined_graph if hasattr(module, "inlined_graph") else module.graph
    kinds = {node.kind() for node in graph.nodes()}
    return tuple(sorted(kind for kind in kinds if kind.startswith(CUSTOM_OP_PREFIX)))


def op_library_path() -> str | None:
    try:
        from aesipe.ops import _build
    except ImportError:
        return None
    path = _build.library_path()
    return str(path) if path else None


def write_torchscript(module: torch.jit.ScriptModule, metadata: Mapping[str, str], path: Path) -> Path:
    """Save ``module`` with ``metadata`` (the caller makes the write atomic)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates torch.jit; libtorch still loads it
        torch.jit.save(module, str(path), _extra_files={EXTRA_FILE: json.dumps(dict(metadata))})
    return path
