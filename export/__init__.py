"""aesipe.export: trained model -> a verified ONNX or TorchScript file carrying its own metadata."""
from __future__ import annotations

__all__ = ["export_model", "FORMATS"]


def __getattr__(name: str):
    if name == "export_model":
        from .api import export_model

        return export_model
    if name == "FORMATS":
        from .formats import FORMATS

        return FORMATS
    raise AttributeError(f"module 'aesipe.export' has no attribute {name!r}")
