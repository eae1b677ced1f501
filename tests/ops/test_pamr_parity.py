"""The fused op against the reference on random inputs: dilations x num_iter x classes x sizes x layout
x batch x dtype, for every kernel of the op (``kernel``: CPU; CUDA, which skips without a GPU; and the CUDA
thread code run on the CPU by the grid emulator)."""
from __future__ import annotations

import pytest
import torch

from aesipe.ops import pamr

DILATION_SETS = [(1,), (1, 2, 4, 8, 12, 24), (3, 5)]


@pytest.mark.parametrize("dilations", DILATION_SETS, ids=str)
@pytest.mark.parametrize("num_iter", [0, 1, 10])
@pytest.mark.parametrize("classes", [1, 3, 21])
def test_matches_reference(kernel, reference, random_inputs, dilations, num_iter, classes):
    fused, device = kernel
    image, mask = random_inputs(1, 3, classes, 13, 11, seed=classes + num_iter, device=device)
    out = fused(image, mask, dilations, num_iter)
    assert out.shape == mask.shape and out.dtype == mask.dtype and out.device == mask.device
    torch.testing.assert_close(out, reference(image, mask, dilations, num_iter), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (9, 1), (5, 5), (31, 17), (50, 3)], ids=str)
def test_matches_reference_across_sizes(kernel, reference, random_inputs, size):
    fused, device = kernel
    image, mask = random_inputs(2, 3, 4, *size, seed=sum(size), device=device)
    dilations = (1, 2, 4, 8, 12, 24)
    torch.testing.assert_close(
        fused(image, mask, dilations, 5), reference(image, mask, dilations, 5), atol=1e-5, rtol=1e-5
    )


def test_batch_items_are_independent(kernel, random_inputs):
    fused, device = kernel
    image, mask = random_inputs(3, 3, 5, 12, 10, seed=7, device=device)
    whole = fused(image, mask, (1, 3), 4)
    for b in range(3):
        torch.testing.assert_close(whole[b:b + 1], fused(image[b:b + 1], mask[b:b + 1], (1, 3), 4))


@pytest.mark.parametrize("layout", ["channels_last", "permuted", "sliced", "expanded"])
def test_non_contiguous_inputs(kernel, reference, random_inputs, layout):
    fused, device = kernel
    image, mask = random_inputs(2, 3, 6, 15, 14, seed=11, device=device)
    if layout == "channels_last":
        image = image.contiguous(memory_format=torch.channels_last)
        mask = mask.contiguous(memory_format=torch.channels_last)
    elif layout == "permuted":  # a transposed view: H and W swapped, strides not row-major
        image, mask = image.transpose(2, 3), mask.transpose(2, 3)
    elif layout == "sliced":  # every other class and a cropped window
        image, mask = image[:, :, 1:-2, 2:], mask[:, ::2, 1:-2, 2:]
    else:  # stride-0 batch
        image, mask = image[:1].expand(3, -1, -1, -1), mask[:1].expand(3, -1, -1, -1)
    assert not mask.is_contiguous()
    expected = reference(image.contiguous(), mask.contiguous(), (1, 2, 5), 3)
    out = fused(image, mask, (1, 2, 5), 3)
    assert out.is_contiguous()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(kernel, reference, random_inputs, atol, dtype):
    fused, device = kernel
    image, mask = random_inputs(1, 3, 5, 17, 19, seed=5, dtype=dtype, device=device)
    out = fused(image, mask, (1, 2, 4), 3)
    assert out.dtype == dtype
    torch.testing.assert_close(out, reference(image, mask, (1, 2, 4), 3), atol=atol[dtype], rtol=0)


def test_mixed_dtypes_return_the_mask_dtype(kernel, reference, random_inputs):
    fused, device = kernel
    image, mask = random_inputs(1, 3, 2, 9, 9, seed=2, device=device)
    out = fused(image.double(), mask.half(), (1, 2), 2)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, reference(image.double(), mask.half(), (1, 2), 2), atol=2e-3, rtol=0)


def test_output_never_aliases_the_input(kernel, random_inputs):
    fused, device = kernel
    image, mask = random_inputs(1, 3, 2, 6, 6, device=device)
    for num_iter in (0, 1, 2):
        out = fused(image, mask, (1,), num_iter)
        assert out.data_ptr() != mask.data_ptr()
    before = mask.clone()
    fused(image, mask, (1, 2), 3)
    torch.testing.assert_close(mask, before, atol=0, rtol=0)  # inputs are never written


def test_deterministic(kernel, random_inputs):
    fused, device = kernel
    image, mask = random_inputs(2, 3, 21, 33, 29, seed=9, device=device)
    first = fused(image, mask, (1, 2, 4, 8, 12, 24), 10)
    assert torch.equal(first, fused(image, mask, (1, 2, 4, 8, 12, 24), 10))


def test_public_api_resizes_then_matches_reference(device, random_inputs, op_library):
    image, _ = random_inputs(2, 3, 1, 23, 31, device=device)
    low_res = torch.rand(2, 4, 6, 8, generator=torch.Generator().manual_seed(1)).to(device)
    fused_out = pamr(image, low_res, num_iter=4, dilations=(1, 2, 4), backend="fused")
    reference_out = pamr(image, low_res, num_iter=4, dilations=(1, 2, 4), backend="reference")
    assert fused_out.shape == (2, 4, 23, 31)
    torch.testing.assert_close(fused_out, reference_out, atol=1e-5, rtol=1e-5)


# Every implementation (reference, the standard-op decomposition that ONNX export uses, fused CPU/CUDA)
# against the reference: row counts around the decomposition's row tile, sizes below the largest
# dilation, batch 2, classes 1 and 21.
@pytest.mark.parametrize(
    "batch, classes, height, width",
    [(1, 21, 13, 11), (2, 3, 1, 9), (2, 4, 9, 1), (1, 1, 8, 8), (2, 5, 17, 30), (1, 3, 33, 7)],
    ids=str,
)
@pytest.mark.parametrize("dilations, num_iter", [((1, 2, 4, 8, 12, 24), 10), ((3, 5), 2)], ids=str)
def test_every_implementation_matches_reference(implementation, reference, random_inputs, batch, classes,
                                                height, width, dilations, num_iter):
    fn, device = implementation
    image, mask = random_inputs(batch, 3, classes, height, width, seed=height * 7 + width, device=device)
    out = fn(image, mask, dilations, num_iter)
    assert out.shape == mask.shape and out.dtype == mask.dtype
    torch.testing.assert_close(out.cpu(), reference(image.cpu(), mask.cpu(), dilations, num_iter),
                               atol=1e-5, rtol=1e-5)
