"""Session fixtures: a tiny run directory and its exported files (exported once, shared by tests)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def load_tiny_models():
    """Import tests/export/tiny_models.py once under a fixed name (tests/infer uses it too)."""
    name = "aesipe_tests_tiny_models"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("tiny_models.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


tiny = load_tiny_models()


# The shared session fixtures (defined in tiny_models.py).
tiny_builders, export_base, seg_onnx, seg_torchscript, pl_onnx = (
    tiny.tiny_builders, tiny.export_base, tiny.seg_onnx, tiny.seg_torchscript, tiny.pl_onnx
)
