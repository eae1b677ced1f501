"""Python-side registrations for the compiled ``aesipe::pamr`` op.

* Fake (meta) kernel: shapes only, so ``torch.export`` / ``torch.compile`` / FakeTensor can trace the
  op. It runs the same input checks as the C++ kernel.
* Autograd policy: refused, in C++ (``pamr_autograd`` in cpp_ext/pamr.cpp raises when grad mode is on
  and an input requires grad), so TorchScript and C++ callers get the same error as Python ones.

The C++ library names this module with ``set_python_module``: torch imports it by itself when it needs
the fake kernel of a library loaded with a bare ``torch.ops.load_library``.
"""
from __future__ import annotations

import torch

from ._checks import check_inputs

_registered = False


def _pamr_fake(image: torch.Tensor, mask: torch.Tensor, dilations: list[int], num_iter: int) -> torch.Tensor:
    check_inputs(image, mask, dilations, num_iter)
    return mask.new_empty(mask.shape)  # contiguous, mask's dtype and device, like the real kernel


def register() -> None:
    """Register the fake kernel once per process (the op must already be loaded)."""
    global _registered
    if not _registered:
        torch.library.register_fake("aesipe::pamr")(_pamr_fake)
        _registered = True


def _op_loaded() -> bool:
    try:
        torch.ops.aesipe.pamr  # noqa: B018 -- attribute lookup is the existence test
    except (AttributeError, RuntimeError):
        return False
    return True


if _op_loaded():  # imported by torch for a library loaded without aesipe's loader
    register()
