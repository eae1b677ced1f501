"""Session fixtures: a tiny run directory and its exported files (exported once, shared by tests)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


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


@pytest.fixture(scope="session", autouse=True)
def tiny_builders():
    from aesipe.export import sources

    saved = tiny.install_builders()
    yield
    sources.BUILDERS.clear()
    sources.BUILDERS.update(saved)


@pytest.fixture(scope="session")
def export_base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "tiny_exports"


@pytest.fixture(scope="session")
def seg_onnx(export_base) -> Path:
    return tiny.exported(export_base, "segmenter", "onnx")


@pytest.fixture(scope="session")
def seg_torchscript(export_base) -> Path:
    return tiny.exported(export_base, "segmenter", "torchscript")


@pytest.fixture(scope="session")
def pl_onnx(export_base) -> Path:
    return tiny.exported(export_base, "pseudo_labeller", "onnx")
