"""aesipe.infer: label images with an exported model (numpy + Pillow + ONNX Runtime; never torch on ONNX).

``Labeler(model_path).label(image)`` for one image at a time inside another app; ``label_folder`` (the
engine of ``aesipe-label``) for folders.
"""
from __future__ import annotations

from aesipe.contract import ModelInfo

from .api import Labeler
from .folder import label_folder
from .report import Report

__all__ = ["Labeler", "label_folder", "ModelInfo", "Report"]
