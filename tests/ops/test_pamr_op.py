"""The aesipe::pamr op contract: input checks, empty inputs, autograd refusal, opcheck, torch.export,
torch.compile, TorchScript, and the public API around the op."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from aesipe.ops import PAMR, pamr, pamr_backend_for


def rand(*shape, dtype=torch.float32):
    return torch.rand(*shape).to(dtype)


# (case id, image, mask, dilations, num_iter, exception, message fragment, checked by the public API)
INVALID = [
    ("image-rank", rand(3, 5, 5), rand(1, 2, 5, 5), [1], 1, ValueError, "image must be 4-D [B, C, H, W], got 3-D", True),
    ("mask-rank", rand(1, 3, 5, 5), rand(2, 5, 5), [1], 1, ValueError, "mask must be 4-D [B, K, H, W], got 3-D", True),
    ("batch", rand(2, 3, 5, 5), rand(1, 2, 5, 5), [1], 1, ValueError, "same batch size, got 2 and 1", True),
    ("size", rand(1, 3, 5, 5), rand(1, 2, 5, 4), [1], 1, ValueError, "same height and width, got 5x5 and 5x4", False),
    ("channels", rand(1, 0, 5, 5), rand(1, 2, 5, 5), [1], 1, ValueError, "image must have at least one channel", True),
    ("image-dtype", rand(1, 3, 5, 5, dtype=torch.int64), rand(1, 2, 5, 5), [1], 1, TypeError,
     "image must be a floating-point tensor", True),
    ("mask-dtype", rand(1, 3, 5, 5), rand(1, 2, 5, 5, dtype=torch.uint8), [1], 1, TypeError,
     "mask must be a floating-point tensor", True),
    ("no-dilations", rand(1, 3, 5, 5), rand(1, 2, 5, 5), [], 1, ValueError, "dilations must not be empty", True),
    ("dilation-zero", rand(1, 3, 5, 5), rand(1, 2, 5, 5), [1, 0], 1, ValueError, "every dilation must be >= 1", True),
    ("too-many-dilations", rand(1, 3, 5, 5), rand(1, 2, 5, 5), [1] * 65, 1, ValueError,
     "at most 64 dilations are supported, got 65", True),
    ("num-iter", rand(1, 3, 5, 5), rand(1, 2, 5, 5), [1], -1, ValueError, "num_iter must be >= 0, got -1", True),
]
INVALID_IDS = [case[0] for case in INVALID]


@pytest.mark.parametrize("case", INVALID, ids=INVALID_IDS)
def test_op_rejects_invalid_inputs(op_library, case):
    _, image, mask, dilations, num_iter, error, message, _ = case
    with pytest.raises(error, match=f"aesipe::pamr: .*{_escape(message)}"):
        torch.ops.aesipe.pamr(image, mask, dilations, num_iter)


@pytest.mark.parametrize("case", INVALID, ids=INVALID_IDS)
def test_fake_kernel_rejects_invalid_inputs(op_library, case):
    _, image, mask, dilations, num_iter, error, message, _ = case
    with FakeTensorMode() as mode:
        image, mask = mode.from_tensor(image), mode.from_tensor(mask)
        with pytest.raises(error, match=_escape(message)):
            torch.ops.aesipe.pamr(image, mask, dilations, num_iter)


@pytest.mark.parametrize("backend", ["reference", "fused", "auto"])
@pytest.mark.parametrize("case", [c for c in INVALID if c[-1]], ids=[c[0] for c in INVALID if c[-1]])
def test_public_api_rejects_invalid_inputs_on_every_backend(op_library, case, backend):
    _, image, mask, dilations, num_iter, error, message, _ = case
    with pytest.raises(error, match=_escape(message)):
        pamr(image, mask, num_iter=num_iter, dilations=dilations, backend=backend)


def test_device_mismatch_is_rejected(op_library):
    # Without a second real device here, the meta device stands in: the Python checks (public API and
    # the fake/meta kernel) see a CPU image and a meta mask.
    image, mask = torch.rand(1, 3, 4, 4), torch.rand(1, 2, 4, 4, device="meta")
    with pytest.raises(ValueError, match="same device, got cpu and meta"):
        pamr(image, mask)
    with pytest.raises(ValueError, match="same device, got cpu and meta"):
        torch.ops.aesipe.pamr(image, mask, [1], 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_mismatch_is_rejected_by_the_cuda_kernel(op_library):
    with pytest.raises(ValueError, match="same device"):
        torch.ops.aesipe.pamr(torch.rand(1, 3, 4, 4, device="cuda"), torch.rand(1, 2, 4, 4), [1], 1)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        pamr(torch.rand(1, 3, 4, 4), torch.rand(1, 2, 4, 4), backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        PAMR(backend="fast")
    with pytest.raises(ValueError, match="every dilation must be >= 1"):
        PAMR(dilations=(0,))


@pytest.mark.parametrize("shape", [(0, 3, 5, 5, 2), (1, 3, 5, 5, 0), (1, 3, 0, 5, 2), (2, 3, 4, 0, 2)])
def test_empty_inputs_return_empty_outputs(device, shape):
    batch, channels, height, width, classes = shape
    image = torch.rand(batch, channels, height, width, device=device)
    mask = torch.rand(batch, classes, height, width, device=device)
    out = torch.ops.aesipe.pamr(image, mask, [1, 2], 3)
    assert out.shape == mask.shape and out.device == mask.device and out.numel() == 0
    for backend in ("reference", "fused"):
        low_res = torch.rand(batch, classes, 3, 3, device=device)
        assert pamr(image, low_res, backend=backend).shape == (batch, classes, height, width)


def test_public_api_never_returns_the_callers_tensor():
    mask = torch.rand(1, 2, 4, 4)
    out = pamr(torch.rand(1, 3, 4, 4), mask, num_iter=0, backend="reference")
    assert out.data_ptr() != mask.data_ptr() and torch.equal(out, mask)


# ----------------------------------------------------------------------------- autograd policy


@pytest.mark.parametrize("which", ["image", "mask"])
def test_op_refuses_gradients(op_library, which):
    image, mask = torch.rand(1, 3, 6, 6), torch.rand(1, 2, 6, 6)
    (image if which == "image" else mask).requires_grad_()
    with pytest.raises(RuntimeError, match="aesipe::pamr is not differentiable"):
        torch.ops.aesipe.pamr(image, mask, [1], 2)
    with torch.no_grad():
        assert not torch.ops.aesipe.pamr(image, mask, [1], 2).requires_grad
    with torch.inference_mode():
        assert not torch.ops.aesipe.pamr(image, mask, [1], 2).requires_grad


@pytest.mark.parametrize("backend", ["reference", "fused", "auto"])
def test_public_api_refuses_gradients_on_every_backend(op_library, backend):
    image, mask = torch.rand(1, 3, 6, 6), torch.rand(1, 2, 3, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable.*torch.no_grad"):
        pamr(image, mask, backend=backend)
    with torch.no_grad():
        out = pamr(image, mask, backend=backend)
    torch.testing.assert_close(out, pamr(image, mask.detach(), backend="reference"), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- PT2 / TorchScript


def test_opcheck(op_library):
    # Samples never require grad: the op refuses gradients by design, so opcheck's sub-tests (which all
    # run the op) would stop at that refusal. test_autograd_registration still checks that an Autograd
    # kernel is registered for the op.
    samples = [
        (torch.rand(2, 3, 9, 7), torch.rand(2, 4, 9, 7), [1, 2], 3),
        (torch.rand(1, 3, 5, 6).double(), torch.rand(1, 1, 5, 6).half(), [3], 1),
        (torch.rand(1, 3, 8, 8).transpose(2, 3), torch.rand(1, 5, 8, 8)[:, ::2], [1, 2, 4, 8, 12, 24], 0),
        (torch.rand(0, 3, 4, 4), torch.rand(0, 2, 4, 4), [1], 2),
    ]
    for image, mask, dilations, num_iter in samples:
        result = torch.library.opcheck(torch.ops.aesipe.pamr.default, (image, mask, dilations, num_iter))
        assert set(result.values()) == {"SUCCESS"}, result


class _Net(torch.nn.Module):
    """A conv head (its parameters require grad) feeding PAMR at a lower resolution."""

    def __init__(self, backend):
        super().__init__()
        self.head = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.refine = PAMR(num_iter=3, dilations=(1, 2), backend=backend)

    def forward(self, image):
        return self.refine(image, self.head(image)[:, :, ::2, ::2])


def test_torch_export_keeps_the_op_and_dynamic_sizes(op_library):
    net = _Net("fused")
    image = torch.rand(1, 3, 12, 10)
    dims = {"image": {2: torch.export.Dim("h", min=4, max=64), 3: torch.export.Dim("w", min=4, max=64)}}
    program = torch.export.export(net, (image,), dynamic_shapes=dims)
    assert "aesipe.pamr.default" in {str(node.target) for node in program.graph.nodes}
    other = torch.rand(1, 3, 17, 9)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(other), net(other))


def test_torch_compile_traces_the_op(op_library):
    net = _Net("fused")
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    image = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        torch.testing.assert_close(compiled(image), net(image))


def test_torchscript_file_runs_with_only_the_op_library(op_library, tmp_path):
    class CallsTheOp(torch.nn.Module):
        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return torch.ops.aesipe.pamr(image, mask, [1, 2, 4], 5)

    image, low_res = torch.rand(1, 3, 14, 12), torch.rand(1, 3, 7, 6)
    full_res = torch.rand(1, 3, 14, 12)
    torch.jit.script(CallsTheOp()).save(str(tmp_path / "op.pt"))
    torch.jit.script(PAMR(num_iter=4, dilations=(1, 3))).save(str(tmp_path / "module.pt"))
    with torch.no_grad():
        torch.jit.trace(_Net("fused"), (image,)).save(str(tmp_path / "traced.pt"))
    torch.save({"image": image, "low_res": low_res, "full_res": full_res}, tmp_path / "inputs.pt")

    # A fresh interpreter that never imports aesipe: the op library alone must be enough.
    script = textwrap.dedent(
        f"""
        import torch
        torch.ops.load_library({str(op_library)!r})
        d = torch.load({str(tmp_path / "inputs.pt")!r})
        out = {{
            "op": torch.jit.load({str(tmp_path / "op.pt")!r})(d["image"], d["full_res"]),
            "module": torch.jit.load({str(tmp_path / "module.pt")!r})(d["image"], d["low_res"]),
            "traced_graph": str(torch.jit.load({str(tmp_path / "traced.pt")!r}).inlined_graph),
        }}
        torch.save(out, {str(tmp_path / "out.pt")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    out = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(out["op"], torch.ops.aesipe.pamr(image, full_res, [1, 2, 4], 5))
    torch.testing.assert_close(out["module"], pamr(image, low_res, num_iter=4, dilations=(1, 3), backend="reference"),
                               atol=1e-5, rtol=1e-5)
    assert "aesipe::pamr" in out["traced_graph"]


# ----------------------------------------------------------------------------- backend choice


def test_auto_uses_the_fused_op_where_available(op_library):
    assert pamr_backend_for("cpu") == "fused"
    assert pamr_backend_for(torch.device("meta")) == "reference"
    image, mask = torch.rand(1, 3, 9, 9), torch.rand(1, 2, 5, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning where the op exists
        auto = pamr(image, mask, num_iter=3, backend="auto")
    assert torch.equal(auto, pamr(image, mask, num_iter=3, backend="fused"))


def _escape(text: str) -> str:
    import re

    return re.escape(text)
