"""Input checks for PAMR, one message per precondition.

The C++ op (cpp_ext/pamr_driver.h, ``check_inputs``) raises the same messages; this Python copy serves the
public API (so every backend, the reference included, rejects the same inputs) and the fake kernel (so
``torch.export`` / ``torch.compile`` fail the way eager calls do). Exception types follow the op:
``TypeError`` for dtypes, ``ValueError`` for everything else.
"""
from __future__ import annotations

from typing import Sequence

import torch

MAX_DILATIONS = 64  # kMaxDilations in cpp_ext/pamr_common.h
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

NOT_DIFFERENTIABLE = (
    "aesipe::pamr is not differentiable (PAMR is detached by design: it produces a fixed refinement "
    "target). Detach the inputs (image.detach(), mask.detach()) or call it under torch.no_grad() / "
    "torch.inference_mode()."
)


def _fail(message: str, kind: type[Exception] = ValueError) -> None:
    raise kind(f"aesipe::pamr: {message}")


def check_params(dilations: Sequence[int], num_iter: int) -> None:
    """Checks that need no tensors (also run by ``PAMR.__init__`` so a bad module fails early)."""
    if len(dilations) == 0:
        _fail("dilations must not be empty")
    if len(dilations) > MAX_DILATIONS:
        _fail(f"at most {MAX_DILATIONS} dilations are supported, got {len(dilations)}")
    if any(d < 1 for d in dilations):
        _fail(f"every dilation must be >= 1, got {list(dilations)}")
    if num_iter < 0:
        _fail(f"num_iter must be >= 0, got {num_iter}")


def check_inputs(
    image: torch.Tensor,
    mask: torch.Tensor,
    dilations: Sequence[int],
    num_iter: int,
    *,
    same_size: bool = True,
) -> None:
    """Validate PAMR inputs; ``same_size=False`` for the public API, which resizes the mask itself."""
    if image.dim() != 4:
        _fail(f"image must be 4-D [B, C, H, W], got {image.dim()}-D")
    if mask.dim() != 4:
        _fail(f"mask must be 4-D [B, K, H, W], got {mask.dim()}-D")
    if image.shape[0] != mask.shape[0]:
        _fail(f"image and mask must have the same batch size, got {image.shape[0]} and {mask.shape[0]}")
    if same_size and image.shape[2:] != mask.shape[2:]:
        _fail(
            "image and mask must have the same height and width, got "
            f"{image.shape[2]}x{image.shape[3]} and {mask.shape[2]}x{mask.shape[3]} "
            "(aesipe.pamr() resizes the mask; the op does not)"
        )
    if image.shape[1] < 1:
        _fail("image must have at least one channel")
    if image.device != mask.device:
        _fail(f"image and mask must be on the same device, got {image.device} and {mask.device}")
    for name, tensor in (("image", image), ("mask", mask)):
        if tensor.dtype not in FLOAT_DTYPES:
            _fail(
                f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
                f"got {tensor.dtype}",
                TypeError,
            )
    check_params(dilations, num_iter)
