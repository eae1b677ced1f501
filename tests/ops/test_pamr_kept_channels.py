"""pamr_kept_channels: PAMR of the kept channels only equals PAMR of all of them when the others are zero,
eagerly (every backend) and in an exported graph whose channel count depends on the tags."""
from __future__ import annotations

import pytest
import torch

from aesipe.ops.pamr import pamr, pamr_kept_channels


def _maps_and_keep(batch=2, channels=6, size=(5, 7), seed=0):
    gen = torch.Generator().manual_seed(seed)
    keep = torch.zeros(batch, channels)
    keep[:, 0] = 1
    keep[0, 2] = 1
    if batch > 1:
        keep[1, 4] = 1  # a channel only the second item keeps: zero in the first, refined anyway
    maps = torch.rand(batch, channels, *size, generator=gen) * keep[:, :, None, None]
    image = torch.rand(batch, 3, size[0] * 4, size[1] * 4, generator=gen)
    return image, maps, keep


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_equals_pamr_of_every_channel(backend):
    image, maps, keep = _maps_and_keep()
    expected = pamr(image, maps, 4, (1, 2), backend)
    out = pamr_kept_channels(image, maps, keep, 4, (1, 2), backend)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert out[:, [1, 3, 5]].abs().max() == 0


def test_unkept_channels_are_zero_even_if_the_input_is_not():
    image, maps, keep = _maps_and_keep(batch=1)
    maps[:, 5] = 1.0  # a caller breaking the contract: documented as zero in the result
    out = pamr_kept_channels(image, maps, keep, 2, (1,), "reference")
    assert out[:, 5].abs().max() == 0 and out[:, 2].abs().max() > 0


class _Refine(torch.nn.Module):
    def forward(self, image, maps, keep):
        return pamr_kept_channels(image, maps, keep, 3, (1, 2), "auto")


@pytest.mark.filterwarnings("ignore:# The axis name")
def test_exported_graph_refines_as_many_channels_as_the_tags_keep(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    dim = torch.export.Dim
    batch, classes = dim("B", max=64), dim("K", max=256)
    dynamic = {"image": {0: batch, 2: dim("H", min=4, max=4096), 3: dim("W", min=4, max=4096)},
               "maps": {0: batch, 1: classes, 2: dim("h", min=2, max=1024), 3: dim("w", min=2, max=1024)},
               "keep": {0: batch, 1: classes}}
    image, maps, keep = _maps_and_keep(batch=2, channels=6, size=(4, 5))
    program = torch.onnx.export(_Refine().eval(), (image, maps, keep), dynamo=True, dynamic_shapes=dynamic)
    path = tmp_path / "kept.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed, (batch_size, channels, size) in enumerate([(1, 9, (6, 5)), (2, 6, (3, 8))]):
        image, maps, keep = _maps_and_keep(batch_size, channels, size, seed=seed + 1)
        (out,) = session.run(None, {"image": image.numpy(), "maps": maps.numpy(), "keep": keep.numpy()})
        expected = pamr(image, maps, 3, (1, 2), "reference")
        torch.testing.assert_close(torch.from_numpy(out), expected, atol=1e-4, rtol=1e-4)
