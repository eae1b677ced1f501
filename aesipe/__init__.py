"""aesipe: weakly supervised semantic segmentation from image tags (AE-SIPE -> IRN -> DeepLabV3).

Importing this package is cheap and torch-free: the labelling side (`aesipe.infer`) runs on
numpy + ONNX Runtime alone. Torch-backed names are resolved lazily on first access.
"""
from __future__ import annotations

from ._version import __version__

__all__ = ["__version__", "pamr", "PAMR"]

# name -> module that defines it; imported only when the attribute is first used.
_LAZY = {"pamr": "aesipe.ops.pamr", "PAMR": "aesipe.ops.pamr"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aesipe' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
