"""The CUDA kernels' thread code, run on the CPU by the grid emulator (cpp_ext/cuda/pamr_emulator.cpp).

The parity tests (test_pamr_parity.py, test_pamr_hand.py) hold it against the reference case by case; here:
the result does not depend on how the work is cut into blocks and threads (one thread doing everything, odd
block sizes, the .cu's own launch shape, reverse order), and it matches the CPU kernel in float32 and float64
on the shapes where index arithmetic goes wrong first.
"""
from __future__ import annotations

import pytest
import torch

from aesipe.ops import _build

# (threads per block, blocks, reverse): a single thread that strides over all the work; odd sizes in reverse
# order; one block of the .cu's 256 threads; the .cu's own shape (0 = its 256 threads, up to 2^20 blocks).
LAUNCHES = [(1, 1, False), (7, 5, True), (32, 3, False), (256, 1, True), (0, 0, False)]
DILATIONS = (1, 2, 4, 8, 12, 24)


@pytest.mark.parametrize(
    "batch, classes, height, width",
    [(2, 21, 13, 11), (1, 5, 1, 1), (2, 6, 1, 9), (1, 7, 9, 1)],
    ids=str,
)
def test_launch_shape_changes_no_bit(cuda_emulator, cuda_emulated, random_inputs, batch, classes, height, width):
    image, mask = random_inputs(batch, 3, classes, height, width, seed=height + width)
    results = [cuda_emulated(image, mask, DILATIONS, 3, launch) for launch in LAUNCHES]
    for launch, out in zip(LAUNCHES[1:], results[1:]):
        assert torch.equal(out, results[0]), launch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "batch, channels, classes, height, width, dilations",
    [
        (1, 1, 1, 1, 1, (1,)),  # one pixel: every neighbour clamps to it
        (2, 3, 3, 1, 17, (1, 2, 4, 8, 12, 24)),  # 1 x N, dilations past the image
        (2, 2, 5, 17, 1, (3, 5)),  # N x 1, channels 4 + 1
        (3, 4, 22, 7, 6, (1, 2, 40)),  # 22 = 4 x 5 + 2 classes, batch 3
    ],
    ids=str,
)
def test_matches_the_cpu_kernel(cuda_emulator, op_library, cuda_emulated, fused, random_inputs, atol, dtype,
                                batch, channels, classes, height, width, dilations):
    image, mask = random_inputs(batch, channels, classes, height, width, seed=batch * width, dtype=dtype)
    out = cuda_emulated(image, mask, dilations, 4)
    assert out.dtype == dtype and out.shape == mask.shape
    torch.testing.assert_close(out, fused(image, mask, dilations, 4), atol=atol[dtype], rtol=0)



@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_gpu_computes_what_its_emulation_does(cuda_emulator, op_library, cuda_emulated, fused, random_inputs,
                                                  atol, dtype):
    if not _build._STATE.cuda:
        pytest.skip("the op library was built without CUDA kernels (no nvcc?)")
    image, mask = random_inputs(2, 3, 21, 37, 29, seed=1, dtype=dtype)
    on_gpu = fused(image.cuda(), mask.cuda(), DILATIONS, 10).cpu()
    torch.testing.assert_close(on_gpu, cuda_emulated(image, mask, DILATIONS, 10), atol=atol[dtype], rtol=0)
