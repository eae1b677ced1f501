"""aesipe.ops.resize: the gather form equals torch's bicubic; resize_bicubic exports it, not a Resize."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aesipe.ops.resize import bicubic_by_gathers, resize_bicubic

# Rounding of the source coordinate (float32, as torch's kernel) differs by up to ~1 ulp of the
# coordinate, i.e. ~1.5e-5 at a few hundred pixels: far below any label decision.
TOLERANCE = 5e-5


@pytest.mark.parametrize("size", [(213, 320), (37, 51), (5, 7), (4, 9)])  # 4 x 0.3: one output row
@pytest.mark.parametrize("scale", [0.5, 0.75, 1.25, 1.5, 2.0, 0.3])
def test_matches_torch_bicubic(size, scale):
    image = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    expected = F.interpolate(image, scale_factor=scale, mode="bicubic", align_corners=False)
    out = bicubic_by_gathers(image, scale)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=TOLERANCE, rtol=0)


def test_eagerly_it_is_torch_bicubic():
    image = torch.rand(1, 3, 14, 15)
    assert resize_bicubic(image, 1.0) is image
    assert torch.equal(resize_bicubic(image, 1.5),
                       F.interpolate(image, scale_factor=1.5, mode="bicubic", align_corners=False))


class _Resize(torch.nn.Module):
    def forward(self, image):
        return resize_bicubic(image, 1.5), resize_bicubic(image, 0.5)


def test_onnx_export_is_standard_ops_and_matches_at_other_sizes(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    dim = torch.export.Dim
    dynamic = {"image": {0: dim("B", max=64), 2: dim("H", min=2, max=4096), 3: dim("W", min=2, max=4096)}}
    program = torch.onnx.export(_Resize().eval(), (torch.rand(2, 3, 12, 10),), dynamo=True,
                                dynamic_shapes=dynamic, input_names=["image"])
    path = tmp_path / "resize.onnx"
    program.save(str(path))
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Resize" not in ops and "Gather" in ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 23, 31), (3, 3, 40, 17)]:
        image = torch.rand(*shape, generator=torch.Generator().manual_seed(2))
        big, small = session.run(None, {"image": image.numpy()})
        for out, scale in ((big, 1.5), (small, 0.5)):
            expected = F.interpolate(image, scale_factor=scale, mode="bicubic", align_corners=False)
            torch.testing.assert_close(torch.from_numpy(out), expected, atol=TOLERANCE, rtol=0)
