"""Building, caching and falling back: the op-library build in aesipe.ops._build."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import aesipe
from aesipe.ops import PamrFallbackWarning, _build, pamr, pamr_backend_for
from aesipe.ops.__main__ import main as ops_cli
from aesipe.ops._fatbin import cuda_code
from aesipe.ops.pamr_reference import pamr_reference

REPO_ROOT = Path(aesipe.__file__).resolve().parents[1]
# The module, not the function `aesipe.ops.pamr` that shadows it as a package attribute.
pamr_module = importlib.import_module("aesipe.ops.pamr")


def run_python(code: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports aesipe from this checkout."""
    full_env = {**os.environ, **env}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    """A process state in which the op library was never loaded, with an empty private cache."""
    monkeypatch.setattr(_build, "_STATE", _build._State())
    monkeypatch.setattr(pamr_module, "_fused_reason_cache", {})
    monkeypatch.setattr(pamr_module, "_warned_devices", set())
    monkeypatch.setenv(_build.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def broken_sources(fresh_state, monkeypatch):
    """A copy of the sources in which both C++ files fail to compile at their first line."""
    src = fresh_state / "src"
    shutil.copytree(_build.source_dir(), src, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for name in ("pamr.cpp", "cpu/pamr_kernel.cpp"):
        (src / name).write_text("#error deliberately broken for the fallback test\n")
    monkeypatch.setenv(_build.SOURCE_ENV, str(src))
    return src


def test_failed_build_falls_back_with_one_warning(broken_sources):
    image, mask = torch.rand(1, 3, 8, 7), torch.rand(1, 2, 4, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = pamr(image, mask, num_iter=3, dilations=(1, 2))
        second = pamr(image, mask, num_iter=3, dilations=(1, 2))
    fallback = [w for w in caught if issubclass(w.category, PamrFallbackWarning)]
    assert len(fallback) == 1, [str(w.message) for w in caught]
    message = str(fallback[0].message)
    assert "deliberately broken" in message and "full log:" in message
    log_path = Path(message.split("full log: ")[1].split(")")[0])
    assert "deliberately broken" in log_path.read_text()

    resized = torch.nn.functional.interpolate(mask, size=(8, 7), mode="bilinear", align_corners=True)
    assert torch.equal(first, pamr_reference(image, resized, (1, 2), 3)) and torch.equal(first, second)
    assert pamr_backend_for("cpu") == "reference"
    with pytest.raises(RuntimeError, match="backend='fused'.*unavailable on cpu.*deliberately broken"):
        pamr(image, mask, backend="fused")


def test_missing_compiler_is_reported(fresh_state, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-aesipe")
    assert _build.load_library() is None
    assert "no C++ compiler found" in _build.unavailable_reason()
    with pytest.raises(_build.BuildError, match=r"no C\+\+ compiler found"):
        _build.build()


def test_first_error_line_picks_the_compiler_error():
    log = "Error building extension 'aesipe_pamr': [1/2] c++ -I/src/terror -c pamr.cpp\nFAILED: pamr.o\n"
    log += "c++ -I/src/terror -c pamr.cpp\npamr.cpp:3:1: error: boom\ncollect2: error: ld returned 1\n"
    assert _build.first_error_line(log) == "pamr.cpp:3:1: error: boom"
    # No compiler error: the child's exception, printed last (after cpp_extension's log noise).
    noise = "W1201 cpp_extension.py:183] No CUDA runtime is found\n"
    assert _build.first_error_line(noise + "RuntimeError: Ninja is required\n") == "RuntimeError: Ninja is required"
    assert _build.first_error_line(noise + "IndexError: list index out of range") == "IndexError: list index out of range"
    assert _build.first_error_line("") == "unknown error"


def test_disable_env_forces_the_reference_in_a_fresh_process():
    code = """
import json, warnings, torch
from aesipe.ops import pamr, pamr_backend_for, _build
image, mask = torch.rand(1, 3, 6, 6), torch.rand(1, 2, 3, 3)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pamr(image, mask); pamr(image, mask); pamr(image, mask)
try:
    pamr(image, mask, backend="fused"); fused_error = None
except RuntimeError as exc:
    fused_error = str(exc)
print(json.dumps({
    "warnings": [str(w.message) for w in caught],
    "backend": pamr_backend_for("cpu"),
    "fused_error": fused_error,
    "library": _build.library_path(),
    "op_registered": hasattr(torch.ops.aesipe, "pamr"),
}))
"""
    result = run_python(code, {_build.DISABLE_ENV: "1"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["warnings"]) == 1 and "disabled by AESIPE_DISABLE_EXT=1" in report["warnings"][0]
    assert report["backend"] == "reference" and report["library"] is None and not report["op_registered"]
    assert "disabled by AESIPE_DISABLE_EXT=1" in report["fused_error"]


def test_cached_library_loads_without_a_compiler(op_library):
    # The session build is in the private cache: a new process loads it with no compiler, ninja or nvcc.
    assert Path(os.environ[_build.CACHE_ENV]) in op_library.parents and _build.info()["cached"] is True
    code = "from aesipe.ops import pamr_backend_for, _build; print(pamr_backend_for('cpu'), _build.library_path())"
    result = run_python(code, {"PATH": "/nonexistent", "CXX": "/nonexistent/c++"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["fused", str(op_library)]


def test_find_built_library_finds_only_a_matching_build(op_library, monkeypatch, tmp_path):
    assert _build.find_built_library() == op_library  # the session build, found without compiling
    assert _build.find_built_library(cuda=_build._STATE.cuda) == op_library
    src = tmp_path / "src"
    shutil.copytree(_build.source_dir(), src, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (src / "pamr_common.h").write_text((src / "pamr_common.h").read_text() + "// edited\n")
    monkeypatch.setenv(_build.SOURCE_ENV, str(src))
    assert _build.find_built_library() is None  # edited sources: another key, not built yet
    monkeypatch.delenv(_build.SOURCE_ENV)
    monkeypatch.setenv(_build.CACHE_ENV, str(tmp_path / "empty"))
    assert _build.find_built_library() is None and _build.info()["cached"] is False


def test_build_key_tracks_sources_and_cuda(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(_build.source_dir(), src, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    key = _build.build_key(src, cuda=False)
    assert key == _build.build_key(src, cuda=False)
    assert key != _build.build_key(src, cuda=True)
    with (src / "pamr_common.h").open("a") as header:
        header.write("// touched\n")
    assert key != _build.build_key(src, cuda=False)


def test_source_dir_override_and_default(monkeypatch, tmp_path):
    assert (_build.source_dir() / "pamr.cpp").is_file()
    monkeypatch.setenv(_build.SOURCE_ENV, str(tmp_path))
    assert _build.source_dir() == tmp_path


def test_cli_info_and_build(op_library, capsys):
    assert ops_cli(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["source_dir"] == str(_build.source_dir()) and info["torch"] == torch.__version__
    assert info["built_library"] == info["loaded"] == str(op_library)
    assert ops_cli(["build"]) == 0  # already loaded here: reports the path without rebuilding
    assert str(op_library) in capsys.readouterr().out


@pytest.mark.slow
def test_two_processes_build_once(tmp_path, monkeypatch):
    # Both start on an empty cache; cpp_extension's lock makes the second wait, and ninja then finds it built.
    monkeypatch.setenv(_build.CACHE_ENV, str(tmp_path / "cache"))
    assert _build.find_built_library(cuda=False) is None
    code = "from aesipe.ops import _build; print('LIB', _build.build(cuda=False))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    libs = {line.split(" ", 1)[1] for out in outputs for line in out.splitlines() if line.startswith("LIB ")}
    assert len(libs) == 1 and _build.find_built_library(cuda=False) == Path(libs.pop())
    ninja_log = (_build.find_built_library(cuda=False).parent / ".ninja_log").read_text().splitlines()
    links = [line for line in ninja_log if line.split("\t")[-2:-1] == [_build.LIB_FILE]]
    assert len(links) == 1, ninja_log  # linked once: the second process compiled nothing


# What a GPU build must carry: cubins for Ampere and Hopper (datacentre GPUs of today; an sm_80 cubin also
# runs on 8.6 and 8.9 cards), and PTX of the newest of them, which the driver compiles for newer GPUs.
REQUIRED_CUBINS = {"sm_80", "sm_90"}


@pytest.mark.slow
@pytest.mark.skipif(not torch.version.cuda, reason="torch is not a CUDA build")
@pytest.mark.skipif(_build.cuda_home() is None, reason="nvcc not found")
def test_cuda_build_compiles_and_ships_every_architecture(tmp_path, monkeypatch):
    # Compile-only: the AOT command forces the CUDA kernels into a private cache; no GPU is visible to it (so the
    # architectures are the default list, not a visible GPU's) and no arch list comes from the environment.
    env = {k: v for k, v in os.environ.items() if k != "TORCH_CUDA_ARCH_LIST"}
    result = subprocess.run(
        [sys.executable, "-m", "aesipe.ops", "build", "--cuda"],
        env={
            **env,
            _build.CACHE_ENV: str(tmp_path / "cache"),
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
        },
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(CPU+CUDA; GPU code sm_80, sm_90, compute_90)" in result.stdout
    library = Path(result.stdout.strip().split(": ", 1)[1])
    monkeypatch.setenv(_build.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the key of a build without a visible GPU
    assert library.is_file() and _build.find_built_library(cuda=True) == library
    check = "import torch; torch.ops.load_library(%r); " % str(library)
    check += "print(torch._C._dispatch_has_kernel_for_dispatch_key('aesipe::pamr', 'CUDA'))"
    probe = run_python(check, {})
    assert probe.stdout.strip() == "True", probe.stderr

    # The GPU code inside, read from the library's .nv_fatbin section.
    code = cuda_code(library)
    assert REQUIRED_CUBINS <= set(code), f"missing cubins: {sorted(REQUIRED_CUBINS - set(code))} (has {code})"
    ptx = [int(entry.split("_")[1]) for entry in code if entry.startswith("compute_")]
    assert ptx and max(ptx) >= 90, f"no PTX for GPUs newer than Hopper (has {code})"


def test_a_cpu_library_carries_no_gpu_code(op_library):
    assert _build.info()["built_cuda_code"] == cuda_code(op_library)
    if not _build._STATE.cuda:
        assert cuda_code(op_library) == []


def test_fatbin_reader_rejects_what_is_not_elf(tmp_path):
    (path := tmp_path / "lib.so").write_bytes(b"MZ not an ELF file")
    with pytest.raises(ValueError, match="not a 64-bit little-endian ELF file"):
        cuda_code(path)
