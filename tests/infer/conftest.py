"""Session fixtures: the tiny exported models (shared with tests/export) and awkward image files."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

_NAME = "aesipe_tests_tiny_models"
if _NAME not in sys.modules:  # the same module object as tests/export's, so exports happen once
    _spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).parents[1] / "export" / "tiny_models.py")
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])
tiny = sys.modules[_NAME]


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


smooth_rgb = tiny.smooth_rgb


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """Five ordinary images in two sub-folders, two sizes (so batching groups them)."""
    root = tmp_path / "images"
    for i, (rel, size) in enumerate([("a.jpg", (40, 56)), ("b.png", (40, 56)), ("sub/c.JPG", (33, 47)),
                                     ("sub/d.webp", (40, 56)), ("sub/deeper/e.bmp", (21, 18))]):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_rgb(*size, seed=i)).save(path)
    (root / "notes.txt").write_text("not an image, ignored")
    return root
