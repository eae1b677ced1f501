"""The standard-op decomposition: eager parity with the reference, and ONNX export that stock ONNX
Runtime runs at dynamic sizes."""
from __future__ import annotations

import pytest
import torch

from aesipe.ops import pamr
from aesipe.ops.pamr_decomposed import pamr_decomposed


@pytest.mark.parametrize("dilations", [(1,), (1, 2, 4, 8, 12, 24), (3, 5), (40,)], ids=str)
@pytest.mark.parametrize("num_iter", [0, 1, 6])
def test_decomposition_matches_reference(reference, random_inputs, dilations, num_iter):
    image, mask = random_inputs(2, 3, 4, 11, 14, seed=num_iter)
    torch.testing.assert_close(
        pamr_decomposed(image, mask, dilations, num_iter), reference(image, mask, dilations, num_iter),
        atol=1e-5, rtol=1e-5,
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_decomposition_dtypes(reference, random_inputs, atol, dtype):
    image, mask = random_inputs(1, 3, 3, 9, 8, seed=4, dtype=dtype)
    out = pamr_decomposed(image, mask, (1, 2), 3)
    assert out.dtype == dtype
    torch.testing.assert_close(out, reference(image, mask, (1, 2), 3), atol=atol[dtype], rtol=0)


class _Refine(torch.nn.Module):
    def __init__(self, backend: str):
        super().__init__()
        self.backend = backend

    def forward(self, image, mask):
        return pamr(image, mask, num_iter=3, dilations=(1, 2, 4), backend=self.backend)


# The exporter notes that the shared batch Dim "B" names both inputs' first axis: expected, harmless.
@pytest.mark.filterwarnings("ignore:# The axis name")
def test_onnx_export_runs_in_onnxruntime_at_dynamic_sizes(tmp_path, op_library):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    dim = torch.export.Dim
    batch = dim("B", max=64)
    dynamic = {
        "image": {0: batch, 2: dim("H", min=2, max=2048), 3: dim("W", min=2, max=2048)},
        "mask": {0: batch, 2: dim("h", min=2, max=1024), 3: dim("w", min=2, max=1024)},
    }
    # backend="fused" on purpose: while exporting, every backend takes the decomposition. (Example sizes
    # avoid 0 and 1, which torch.export would specialise.)
    program = torch.onnx.export(
        _Refine("fused").eval(), (torch.rand(2, 3, 12, 10), torch.rand(2, 2, 4, 4)),
        dynamo=True, dynamic_shapes=dynamic,
    )
    path = tmp_path / "pamr.onnx"
    program.save(str(path))
    model = onnx.load(str(path))
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}, "custom-domain node exported"
    assert {"Pad", "Conv"} <= {node.op_type for node in model.graph.node}

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    for batch_size, height, width, h, w in [(2, 12, 10, 4, 4), (1, 23, 31, 7, 5)]:
        image = torch.rand(batch_size, 3, height, width, generator=gen)
        mask = torch.rand(batch_size, 2, h, w, generator=gen)
        (out,) = session.run(None, {"image": image.numpy(), "mask": mask.numpy()})
        expected = pamr(image, mask, num_iter=3, dilations=(1, 2, 4), backend="reference")
        torch.testing.assert_close(torch.from_numpy(out), expected, atol=1e-4, rtol=1e-4)
