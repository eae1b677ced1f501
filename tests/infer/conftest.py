"""Session fixtures: the tiny exported models (shared with tests/export) and awkward image files."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from PIL import Image


def _load(name: str, path: Path):
    """Import ``path`` once as module ``name`` (test helpers are files, not a package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


# The same module object as tests/export's, so exports happen once.
tiny = _load("aesipe_tests_tiny_models", Path(__file__).parents[1] / "export" / "tiny_models.py")
# The segmenter with known answers of the output, tiling and sheet tests (needs tiny, loaded above).
colour = _load("aesipe_tests_colour_model", Path(__file__).with_name("colour_model.py"))


# The shared session fixtures (defined in tiny_models.py).
tiny_builders, export_base, seg_onnx, seg_torchscript, pl_onnx = (
    tiny.tiny_builders, tiny.export_base, tiny.seg_onnx, tiny.seg_torchscript, tiny.pl_onnx
)
colour_onnx, scenes = colour.colour_onnx, colour.scenes


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
