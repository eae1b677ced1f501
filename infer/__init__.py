"""aesipe.infer: label images with an exported model (numpy + Pillow + ONNX Runtime; never torch on ONNX).

``Labeler(model_path).label(image)`` for one image at a time inside another app; ``label_folder`` (the
engine of ``aesipe-label``) for folders. Both take one ``LabelSettings`` (or its fields as keywords).
"""
from __future__ import annotations

from aesipe.contract import ModelInfo

from .folder import label_folder
from .labeler import Labeler
from .report import Report
from .settings import LabelSettings

__all__ = ["Labeler", "LabelSettings", "label_folder", "ModelInfo", "Report"]
