"""Shared fixtures for the PAMR tests: the built op library, devices, implementations, inputs.

The suite runs with ``--import-mode=importlib``, so helpers are handed out as fixtures rather than
imported. The op library is built once per session into the suite's private cache (``build/test-cache``,
set by tests/conftest.py), never the user's ``~/.cache``; later runs load it without compiling. Tests
needing the compiled op skip only when no C++ compiler exists (and nothing is cached); any other build
failure fails them.
"""
from __future__ import annotations

import os
import shutil
from typing import Callable

import pytest
import torch

from aesipe.ops import _build
from aesipe.ops.pamr_decomposed import pamr_decomposed
from aesipe.ops.pamr_reference import pamr_reference

CUDA_MARKS = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# Absolute tolerance of a compiled/decomposed result against the reference, by output dtype: the
# reductions run in another order, and half/bfloat16 outputs may differ by a rounding step.
ATOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def _fused(image, mask, dilations, num_iter):
    return torch.ops.aesipe.pamr(image, mask, list(dilations), num_iter)


def _reference(image, mask, dilations, num_iter):
    return pamr_reference(image, mask, tuple(dilations), num_iter)


def _decomposed(image, mask, dilations, num_iter):
    return pamr_decomposed(image, mask, tuple(dilations), num_iter)


def _random_inputs(batch, channels, classes, height, width, *, seed=0, dtype=torch.float32, device="cpu"):
    """An image with structure (a ramp plus noise, so affinities vary) and a random mask."""
    gen = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(1, 1, height, 1)
    xs = torch.linspace(0, 1, width).view(1, 1, 1, width)
    image = (ys + xs) * 100 + 20 * torch.rand(batch, channels, height, width, generator=gen)
    mask = torch.rand(batch, classes, height, width, generator=gen)
    return image.to(device=device, dtype=dtype), mask.to(device=device, dtype=dtype)


@pytest.fixture(scope="session")
def op_library():
    """Path of the loaded aesipe::pamr library (from the private cache, built there on first use)."""
    path = _build.load_library()
    if path is None:
        if shutil.which(os.environ.get("CXX", "c++")) is None:
            pytest.skip("no C++ compiler: the fused op cannot be built here")
        if os.environ.get(_build.DISABLE_ENV, "") not in ("", "0"):
            pytest.skip(f"{_build.DISABLE_ENV} is set")
        pytest.fail(f"the op library did not build: {_build.unavailable_reason()}")
    return path


def _require_kernels_for(device: str) -> None:
    if device == "cuda" and not _build._STATE.cuda:
        pytest.skip("the op library was built without CUDA kernels (no nvcc?)")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=CUDA_MARKS)])
def device(request, op_library) -> str:
    """A device the fused op runs on (the CUDA case skips without a GPU or CUDA kernels)."""
    _require_kernels_for(request.param)
    return request.param


@pytest.fixture(params=["reference", "decomposed", "fused-cpu", pytest.param("fused-cuda", marks=CUDA_MARKS)])
def implementation(request) -> tuple[Callable, str]:
    """Every implementation of same-size PAMR, with the device it runs on."""
    if request.param == "reference":
        return _reference, "cpu"
    if request.param == "decomposed":
        return _decomposed, "cpu"
    request.getfixturevalue("op_library")
    device = request.param.split("-")[1]
    _require_kernels_for(device)
    return _fused, device


@pytest.fixture
def fused() -> Callable:
    return _fused


@pytest.fixture
def reference() -> Callable:
    return _reference


@pytest.fixture
def random_inputs() -> Callable:
    return _random_inputs


@pytest.fixture
def atol() -> dict:
    return ATOL
