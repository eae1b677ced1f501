"""A segmenter with known answers for the output and tiling tests: red things are "cat", green "dog", blue
"car", the rest background -- judged on 4 x 4 cells (stride 4, as a real network's first stages), so an
object that shrinks below about half a cell is lost. Exported through the real checkpoint -> ONNX path."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from aesipe.constants import IMAGENET_MEAN, IMAGENET_STD

tiny = sys.modules["aesipe_tests_tiny_models"]  # loaded by conftest.py
GAIN = 8.0
COLOURS = {1: (230, 20, 20), 2: (20, 200, 20), 3: (20, 20, 230)}
"""Label value -> an RGB colour the model gives that label (cat red, dog green, car blue)."""
GREY = (128, 128, 128)


class ColourSegmenter(nn.Module):
    """logit_k = GAIN x (colour k's excess over the other two, in [0, 1] pixels) on 4 x 4 cells; background
    GAIN x 0.5: a cell is an object when more than about half of it has that colour."""

    def __init__(self, num_foreground: int = 3):
        super().__init__()
        assert num_foreground == 3
        self.colour = nn.Conv2d(3, 4, 1)
        self.pool = nn.AvgPool2d(4, 4)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        excess = torch.tensor([[0.0, 0.0, 0.0], [1, -0.5, -0.5], [-0.5, 1, -0.5], [-0.5, -0.5, 1]])
        with torch.no_grad():  # the graph feeds (pixel - mean) / std: undo it inside the 1 x 1 convolution
            self.colour.weight.copy_((GAIN * excess * std)[:, :, None, None])
            self.colour.bias.copy_(GAIN * (excess @ mean) + torch.tensor([GAIN * 0.5, 0, 0, 0]))

    def forward(self, x):
        return self.pool(self.colour(x))


def export_colour_model(base: Path) -> Path:
    from aesipe.export.api import export_model

    target = base / "colour.onnx"
    if not target.exists():
        run = base / "colour_run"
        tiny.save_checkpoint(run / "seg" / "final.pt", "deeplabv3", ColourSegmenter(3))
        with tiny.builders_replaced({"deeplabv3": lambda cfg, c: ColourSegmenter(c)}):
            export_model(run, target, format="onnx", what="segmenter", log=lambda m: None)
    return target


def scene(height: int, width: int, objects: list[tuple[int, int, int, int]], seed: int = 0) -> np.ndarray:
    """A grey, slightly noisy image with squares (label, y, x, side) in their class's colour."""
    rng = np.random.default_rng(seed)
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[:] = GREY
    rgb += rng.integers(0, 8, (height, width, 1), dtype=np.uint8)
    for label, y, x, side in objects:
        rgb[y:y + side, x:x + side] = COLOURS[label]
    return rgb



@pytest.fixture(scope="session")
def colour_onnx(export_base) -> Path:
    return export_colour_model(export_base)


PURPLE = (250, 0, 250)
"""Red and blue alike, about as much as grey: the model hesitates between background, cat and car."""


@pytest.fixture
def scenes(tmp_path) -> Path:
    """Four scenes with known content: cats and dogs, cars and a cat (JPEG), purple squares, plain grey."""
    root = tmp_path / "scenes"
    (root / "street").mkdir(parents=True)
    Image.fromarray(scene(160, 240, [(1, 20, 30, 48), (2, 90, 150, 40)], seed=1)).save(root / "street" / "one.png")
    Image.fromarray(scene(128, 200, [(3, 10, 10, 60), (1, 80, 120, 32)], seed=2)).save(root / "street" / "two.jpg",
                                                                                       quality=95)
    purple = scene(120, 160, [], seed=3)
    purple[20:80, 30:110] = PURPLE
    Image.fromarray(purple).save(root / "purple.png")
    Image.fromarray(scene(96, 96, [], seed=4)).save(root / "plain.png")
    return root
