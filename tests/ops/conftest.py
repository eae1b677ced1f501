"""Shared fixtures for the PAMR tests: the built op library, devices, implementations, inputs.

The suite runs with ``--import-mode=importlib``, so helpers are handed out as fixtures rather than
imported. The op library is built once per session into the suite's private cache (``build/test-cache``,
set by tests/conftest.py), never the user's ``~/.cache``; later runs load it without compiling. Tests
needing the compiled op skip only when no C++ compiler exists (and nothing is cached); any other build
failure fails them.

The CUDA kernels' thread code also runs here without a GPU: ``cuda_emulator`` builds (once, cached the same
way) and loads a test library that runs it on the CPU over every block and thread of the kernels' grid
(cpp_ext/cuda/pamr_emulator.cpp). ``kernel`` and ``implementation`` include it as "cuda-emulated", launched
with a small block and grid (``EMULATED_LAUNCH``) so that every thread runs several grid-stride rounds and the
last round stops part-way.
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


# (threads per block, blocks, reverse order): one warp per block, 3 blocks, far fewer threads than work items.
EMULATED_LAUNCH = (32, 3, False)


def _fused(image, mask, dilations, num_iter):
    return torch.ops.aesipe.pamr(image, mask, list(dilations), num_iter)


def _cuda_emulated(image, mask, dilations, num_iter, launch=EMULATED_LAUNCH):
    return torch.ops.aesipe_cuda_emulator.pamr(image, mask, list(dilations), num_iter, *launch)


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
        _skip_without_compiler()
        if os.environ.get(_build.DISABLE_ENV, "") not in ("", "0"):
            pytest.skip(f"{_build.DISABLE_ENV} is set")
        pytest.fail(f"the op library did not build: {_build.unavailable_reason()}")
    return path


def _skip_without_compiler() -> None:
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler: the fused op cannot be built here")


@pytest.fixture(scope="session")
def cuda_emulator():
    """Path of the loaded CUDA grid emulator (a test build; from the private cache, built there on first use)."""
    try:
        return _build.build_cuda_emulator()
    except _build.BuildError as exc:
        _skip_without_compiler()
        pytest.fail(f"the CUDA emulator did not build: {exc}")


def _require_kernels_for(device: str) -> None:
    if device == "cuda" and not _build._STATE.cuda:
        pytest.skip("the op library was built without CUDA kernels (no nvcc?)")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=CUDA_MARKS)])
def device(request, op_library) -> str:
    """A device the fused op runs on (the CUDA case skips without a GPU or CUDA kernels)."""
    _require_kernels_for(request.param)
    return request.param


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=CUDA_MARKS), "cuda-emulated"])
def kernel(request) -> tuple[Callable, str]:
    """Every kernel of the op, with the device of its tensors: fused CPU, fused CUDA (skips without a GPU) and
    the CUDA thread code run on the CPU by the grid emulator."""
    if request.param == "cuda-emulated":
        request.getfixturevalue("cuda_emulator")
        return _cuda_emulated, "cpu"
    request.getfixturevalue("op_library")
    _require_kernels_for(request.param)
    return _fused, request.param


@pytest.fixture(params=["reference", "decomposed", "fused-cpu", pytest.param("fused-cuda", marks=CUDA_MARKS),
                        "cuda-emulated"])
def implementation(request) -> tuple[Callable, str]:
    """Every implementation of same-size PAMR, with the device it runs on."""
    if request.param == "reference":
        return _reference, "cpu"
    if request.param == "decomposed":
        return _decomposed, "cpu"
    if request.param == "cuda-emulated":
        request.getfixturevalue("cuda_emulator")
        return _cuda_emulated, "cpu"
    request.getfixturevalue("op_library")
    device = request.param.split("-")[1]
    _require_kernels_for(device)
    return _fused, device


@pytest.fixture
def fused() -> Callable:
    return _fused


@pytest.fixture
def cuda_emulated() -> Callable:
    """``cuda_emulated(image, mask, dilations, num_iter, launch=EMULATED_LAUNCH)`` (load ``cuda_emulator`` first)."""
    return _cuda_emulated


@pytest.fixture
def reference() -> Callable:
    return _reference


@pytest.fixture
def random_inputs() -> Callable:
    return _random_inputs


@pytest.fixture
def atol() -> dict:
    return ATOL
