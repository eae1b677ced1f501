"""Public PAMR API: ``pamr(image, mask, ...)`` and the ``PAMR`` module.

Backends:

* ``"reference"``: pure PyTorch (``pamr_reference.py``, the executable specification);
* ``"fused"``: the compiled ``aesipe::pamr`` op for the tensors' device (built on first use, see
  ``_build.py``); raises if it is unavailable there;
* ``"auto"``: fused where available, else the reference with one ``PamrFallbackWarning`` per device type
  per process. ``pamr_backend_for(device)`` tells which one it picks.

While ``torch.onnx.export`` runs, every backend exports the standard-op decomposition
(``pamr_decomposed.py``) so the file runs in stock ONNX Runtime with dynamic H x W.

Gradients are refused (``RuntimeError`` when grad mode is on and an input requires grad) on every
backend, eager and under ``torch.compile``: PAMR is detached by design. Call it under
``torch.no_grad()`` / ``torch.inference_mode()`` or pass detached tensors. While exporting
(``torch.export``, ``torch.onnx.export``, ``torch.jit.trace``) the inputs are detached instead, since
an exported graph is an inference graph.
"""
from __future__ import annotations

import warnings
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import PAMR_DILATIONS, PAMR_ITERATIONS
from . import _build
from ._checks import NOT_DIFFERENTIABLE, check_inputs, check_params
from ._export_context import onnx_exporting
from .pamr_decomposed import pamr_decomposed
from .pamr_reference import pamr_reference

__all__ = ["DEFAULT_DILATIONS", "PAMR", "PamrFallbackWarning", "pamr", "pamr_backend_for", "pamr_kept_channels"]

DEFAULT_DILATIONS = PAMR_DILATIONS
BACKENDS = ("auto", "fused", "reference")
_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}

# device type -> why the fused op cannot run there (None: it can). Filled once per device type.
_fused_reason_cache: dict[str, str | None] = {}
_warned_devices: set[str] = set()


class PamrFallbackWarning(RuntimeWarning):
    """``backend="auto"`` is running the (slower, memory-hungry) reference instead of the fused op."""


def _fused_unavailable_reason(device: torch.device) -> str | None:
    # Reached under torch.compile through _fused_unavailable_reason_const, which Dynamo evaluates once
    # as a constant instead of tracing the build/dispatcher queries below.
    if device.type in _fused_reason_cache:
        return _fused_reason_cache[device.type]
    if _build.load_library() is None:
        reason = _build.unavailable_reason() or "the op library is not loaded"
    elif device.type not in _DISPATCH_KEYS:
        reason = f"the op has kernels for CPU and CUDA only, not {device.type}"
    elif not torch._C._dispatch_has_kernel_for_dispatch_key("aesipe::pamr", _DISPATCH_KEYS[device.type]):
        reason = (
            f"the loaded library {_build.library_path()} has no {_DISPATCH_KEYS[device.type]} kernel "
            "(it was built without CUDA; `python -m aesipe.ops build --cuda` in a fresh process)"
        )
    else:
        reason = None
    _fused_reason_cache[device.type] = reason
    return reason


@torch.compiler.assume_constant_result
def _fused_unavailable_reason_const(device_type: str) -> str | None:
    return _fused_unavailable_reason(torch.device(device_type))


def pamr_backend_for(device: torch.device | str) -> str:
    """The backend ``backend="auto"`` uses on ``device``: ``"fused"`` or ``"reference"``.

    Builds/loads the op library on first call (see ``aesipe.ops._build``).
    """
    return "fused" if _fused_unavailable_reason(torch.device(device)) is None else "reference"


def _choose_backend(backend: str, device: torch.device) -> str:
    if backend == "reference":
        return "reference"
    reason = _fused_unavailable_reason_const(device.type)
    if reason is None:
        return "fused"
    if backend == "fused":
        raise RuntimeError(
            f"aesipe.pamr(backend='fused'): the compiled kernel is unavailable on {device.type}: {reason}. "
            "Use backend='auto' or 'reference', or run `python -m aesipe.ops build --verbose` to see why."
        )
    if device.type not in _warned_devices:
        _warned_devices.add(device.type)
        warnings.warn(
            f"aesipe.pamr: the fused kernel is unavailable on {device.type} ({reason}); using the "
            "pure-PyTorch reference (same results, slower, much more memory). "
            "`python -m aesipe.ops build --verbose` shows the build output.",
            PamrFallbackWarning,
            stacklevel=3,
        )
    return "reference"


def _tracing_for_export() -> bool:
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def pamr(
    image: torch.Tensor,
    mask: torch.Tensor,
    num_iter: int = PAMR_ITERATIONS,
    dilations: Sequence[int] = DEFAULT_DILATIONS,
    backend: str = "auto",
) -> torch.Tensor:
    """Refine ``mask`` [B, K, h, w] with the local affinities of ``image`` [B, C, H, W] -> [B, K, H, W].

    The mask is first resized to H x W (bilinear, align_corners=True). Returns a new tensor of the
    mask's dtype on its device; float16/bfloat16 are computed in float32. See the module docstring
    for ``backend`` and the gradient policy.
    """
    if backend not in BACKENDS:
        raise ValueError(f"aesipe.pamr: backend must be one of {BACKENDS}, got {backend!r}")
    dilations = tuple(int(d) for d in dilations)
    if not torch.jit.is_tracing():  # traced shapes are tensors; the op checks them when the trace runs
        check_inputs(image, mask, dilations, num_iter, same_size=False)
    height, width = image.shape[-2:]
    if _tracing_for_export() or onnx_exporting():
        # Export graphs are inference graphs: record a detach instead of refusing gradients (a model
        # whose parameters require grad then exports without no_grad()), and resize unconditionally:
        # size comparisons would add guards on the dynamic H x W.
        image, mask = image.detach(), mask.detach()
        mask = F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=True)
        if onnx_exporting():
            return pamr_decomposed(image, mask, dilations, num_iter)
        return _run(image, mask, dilations, num_iter, backend)

    batch, classes = mask.shape[:2]
    if batch * classes * height * width == 0:
        return mask.new_empty((batch, classes, height, width))
    if mask.shape[-2] * mask.shape[-1] == 0:
        raise ValueError(f"aesipe::pamr: mask has no pixels to resize ({mask.shape[-2]}x{mask.shape[-1]})")
    if torch.is_grad_enabled() and (image.requires_grad or mask.requires_grad):
        raise RuntimeError(NOT_DIFFERENTIABLE)
    resized = mask
    if mask.shape[-2:] != image.shape[-2:]:  # same size: bilinear with align_corners is the identity
        resized = F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=True)
    out = _run(image, resized, dilations, num_iter, backend)
    return out.clone() if out is mask else out  # never hand back the caller's tensor


def pamr_kept_channels(
    image: torch.Tensor,
    mask: torch.Tensor,
    keep: torch.Tensor,
    num_iter: int = PAMR_ITERATIONS,
    dilations: Sequence[int] = DEFAULT_DILATIONS,
    backend: str = "auto",
) -> torch.Tensor:
    """``pamr`` of only the channels that ``keep`` [B, K] (> 0 = kept) keeps for some batch item.

    The other channels are zero in the result, which is exactly ``pamr``'s result when they are zero in
    ``mask``: PAMR refines every channel on its own, linearly, so a zero channel stays zero. Stage-1
    maps are zero outside the image's tags, so an image with 2 tags of 20 classes refines 3 channels,
    not 21: in the exported pseudo-labeller PAMR is most of the work, and its standard-op form costs
    in proportion to the channels (benchmarks/RESULTS.md, "Pseudo-labeller speed").
    """
    index = (keep > 0).any(dim=0).nonzero().squeeze(1)
    kept = pamr(image, mask.index_select(1, index), num_iter, dilations, backend)
    out = kept.new_zeros((mask.shape[0], mask.shape[1], *kept.shape[-2:]))
    return out.index_copy(1, index, kept)


def _run(image: torch.Tensor, mask: torch.Tensor, dilations: tuple[int, ...], num_iter: int, backend: str):
    if _choose_backend(backend, image.device) == "fused":
        return torch.ops.aesipe.pamr(image, mask, list(dilations), num_iter)
    return pamr_reference(image, mask, dilations, num_iter)


def _scripted_pamr(image: torch.Tensor, mask: torch.Tensor, dilations: List[int], num_iter: int) -> torch.Tensor:
    """What ``PAMR.forward`` compiles to under ``torch.jit.script``: resize, then the fused op."""
    if mask.shape[-2:] != image.shape[-2:]:
        mask = F.interpolate(mask, size=[image.shape[-2], image.shape[-1]], mode="bilinear", align_corners=True)
    return torch.ops.aesipe.pamr(image, mask, dilations, num_iter)


class PAMR(nn.Module):
    """``pamr`` as a module (no parameters): ``PAMR(num_iter, dilations, backend)(image, mask)``.

    Scriptable: ``torch.jit.script(PAMR())`` compiles to the fused op (it loads the op library first);
    load it elsewhere with ``torch.ops.load_library(path)`` before ``torch.jit.load``, ``path`` being
    ``aesipe.ops._build.find_built_library()`` (a cached build; never compiles) or the exporter's
    ``library_path()``.
    """

    def __init__(self, num_iter: int = PAMR_ITERATIONS, dilations: Sequence[int] = DEFAULT_DILATIONS, backend: str = "auto"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"aesipe.PAMR: backend must be one of {BACKENDS}, got {backend!r}")
        self.dilations = tuple(int(d) for d in dilations)
        check_params(self.dilations, num_iter)
        self.num_iter = int(num_iter)
        self.backend = backend
        self._dilation_list = list(self.dilations)  # TorchScript passes int[] as a list

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return _scripted_pamr(image, mask, self._dilation_list, self.num_iter)
        else:
            return pamr(image, mask, self.num_iter, self.dilations, self.backend)

    def __prepare_scriptable__(self) -> "PAMR":
        # torch.jit.script calls this first: the scripted forward needs aesipe::pamr to exist.
        if _build.load_library() is None:
            raise RuntimeError(f"scripting PAMR needs the compiled aesipe::pamr op: {_build.unavailable_reason()}")
        return self

    def extra_repr(self) -> str:
        return f"num_iter={self.num_iter}, dilations={self.dilations}, backend={self.backend!r}"
