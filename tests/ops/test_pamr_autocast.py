"""PAMR under autocast keeps float32: the fused op has no autocast kernel (float32 in, float32 out) and the
reference uses no op that autocast lowers, so a mixed-precision training step refines in full precision.
On the CPU autocast means bfloat16; on CUDA (skips without a GPU) float16, as in the training loop."""
from __future__ import annotations

import pytest
import torch

from aesipe.ops import PAMR, pamr

AUTOCAST_DTYPE = {"cpu": torch.bfloat16, "cuda": torch.float16}


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_pamr_keeps_float32_under_autocast(device, random_inputs, backend):
    image, mask = random_inputs(2, 3, 5, 19, 23, seed=3, device=device)
    low_res = mask[..., ::4, ::4]
    expected = pamr(image, low_res, num_iter=5, dilations=(1, 2, 4), backend=backend)
    with torch.autocast(device_type=device, dtype=AUTOCAST_DTYPE[device]):
        assert torch.is_autocast_enabled(device)
        out = pamr(image, low_res, num_iter=5, dilations=(1, 2, 4), backend=backend)
        module_out = PAMR(num_iter=5, dilations=(1, 2, 4), backend=backend)(image, low_res)
    assert out.dtype == module_out.dtype == torch.float32
    assert torch.equal(out, expected) and torch.equal(module_out, expected)
