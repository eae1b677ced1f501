"""Build, cache and load the compiled PAMR op library (``aesipe::pamr``); the design is in docs/pamr.md.

A build lives in ``cache_root() / build_key(...)``, so ``find_built_library`` finds it with no compiler. Compiling
runs ``torch.utils.cpp_extension.load`` in a child interpreter whose environment has ``CUDA_HOME`` and
``TORCH_CUDA_ARCH_LIST`` before torch is imported (cpp_extension reads ``CUDA_HOME`` once, at import), so nothing
in torch is patched; cpp_extension's lock on the build directory and ninja's up-to-date check make concurrent and
repeated builds safe.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from . import _registrations

LIB_NAME = "aesipe_pamr"
_SUFFIX = ".pyd" if sys.platform == "win32" else ".so"  # what cpp_extension names a library
LIB_FILE = LIB_NAME + _SUFFIX
# The op library's sources, relative to source_dir(): the schema, then each backend's registration and kernels.
CPU_SOURCES = ("pamr.cpp", "cpu/pamr_cpu.cpp", "cpu/pamr_kernel.cpp")
CUDA_SOURCES = ("cuda/pamr_cuda.cpp", "cuda/pamr_kernel.cu")
# A test build, never loaded by the op: the CUDA kernels' thread code run on the CPU (cpp_ext/cuda/pamr_emulator.cpp).
EMULATOR_NAME = "aesipe_pamr_cuda_emulator"
EMULATOR_SOURCES = ("cuda/pamr_emulator.cpp",)
# Without a visible GPU cpp_extension cannot pick architectures (IndexError): Ampere/Hopper cubins plus PTX
# that newer GPUs JIT-compile. Override with TORCH_CUDA_ARCH_LIST (e.g. "7.5" for a T4).
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"
DISABLE_ENV, CACHE_ENV, SOURCE_ENV = "AESIPE_DISABLE_EXT", "AESIPE_CACHE_DIR", "AESIPE_EXT_SOURCE_DIR"
# The child prints the exception text only: no traceback lines for first_error_line to trip on.
_COMPILE = """import json, sys
from torch.utils.cpp_extension import load
try: load(**json.loads(sys.argv[1]))
except Exception as exc: sys.exit(f"{type(exc).__name__}: {exc}")"""
log = logging.getLogger("aesipe.ops")


class BuildError(RuntimeError):
    """Compiling or loading the op library failed. ``log_path`` is the full build log, if written."""

    def __init__(self, message: str, log_path: Path | None = None):
        super().__init__(message)
        self.log_path = log_path


@dataclass
class _State:
    path: Path | None = None  # the loaded library
    cuda: bool = False  # whether it holds CUDA kernels
    error: str | None = None  # why it is unavailable, once an attempt failed
    attempted: bool = False
    emulator: Path | None = None  # the loaded test build of the CUDA emulator (build_cuda_emulator)


_STATE, _LOCK = _State(), threading.RLock()


def source_dir() -> Path:
    """``$AESIPE_EXT_SOURCE_DIR``, else the installed ``aesipe/cpp_ext``, else ``<checkout>/cpp_ext``."""
    if os.environ.get(SOURCE_ENV):
        return Path(os.environ[SOURCE_ENV]).expanduser()
    up = Path(__file__).resolve().parents
    return up[1] / "cpp_ext" if (up[1] / "cpp_ext" / "pamr.cpp").is_file() else up[2] / "cpp_ext"


def cache_root() -> Path:
    """``$AESIPE_CACHE_DIR/ext``, else ``$XDG_CACHE_HOME/aesipe/ext`` or ``~/.cache/aesipe/ext``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "ext"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aesipe" / "ext"


def cuda_home() -> Path | None:
    """``CUDA_HOME``/``CUDA_PATH``, ``/usr/local/cuda`` or nvcc's grandparent, if it holds nvcc and headers
    (nvcc on PATH may be a wrapper script, ``/usr/local/bin/nvcc``)."""
    nvcc = shutil.which("nvcc")
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for home in map(Path, filter(None, candidates + [nvcc and str(Path(nvcc).resolve().parent.parent)])):
        if (home / "bin" / "nvcc").exists() and (home / "include" / "cuda_runtime.h").exists():
            return home
    return None


def wants_cuda(cuda: bool | None) -> bool:
    """Resolve a ``cuda`` request: None = only if torch is a CUDA build, nvcc exists and a GPU is visible."""
    problems = [] if torch.version.cuda else [f"torch {torch.__version__} is not a CUDA build"]
    problems += [] if cuda_home() else ["nvcc was not found (set CUDA_HOME to the CUDA toolkit)"]
    if cuda and problems:
        raise BuildError("cannot build the CUDA kernels: " + "; ".join(problems))
    return bool(cuda) if cuda is not None else not problems and torch.cuda.is_available()


def _arch_list(cuda: bool) -> str | None:
    if cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST") and torch.cuda.is_available():
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{major}.{minor}" for major, minor in sorted(caps))
    return (os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_CUDA_ARCH_LIST) if cuda else None


def _flags(cuda: bool) -> dict[str, list[str]]:
    linux = sys.platform.startswith("linux")
    # at::parallel_for is an inline OpenMP loop in torch's headers: without -fopenmp it runs serially.
    # Linux only: Apple clang has no -fopenmp (the kernel then runs on one thread, still correct).
    openmp = ["-fopenmp"] if linux and torch.backends.openmp.is_available() else []
    # cpp_extension links libtorch_python even into a non-Python library; where the toolchain does not
    # already default to --as-needed, this drops it, so a plain libtorch (C++) process can load the op.
    as_needed = ["-Wl,--as-needed"] if linux else []
    return {"extra_cflags": ["-O3", *openmp], "extra_cuda_cflags": ["-O3"] if cuda else [],
            "extra_ldflags": [*openmp, *as_needed]}


def build_key(src: Path, cuda: bool, name: str = LIB_NAME) -> str:
    """Short hash of what the library ``name`` depends on. Not the compiler, so loading needs none (``build``
    reruns ninja, which recompiles when the compile command changed)."""
    digest = hashlib.sha256()
    for f in sorted(f for pattern in ("*.cpp", "*.h", "*.cu", "*.cuh") for f in src.rglob(pattern)):
        digest.update(f.relative_to(src).as_posix().encode() + b"\0" + f.read_bytes())
    recipe = [name, torch.__version__, torch.version.cuda, cuda, _arch_list(cuda), _flags(cuda), sys.platform]
    digest.update(json.dumps(recipe + [platform.machine()]).encode())
    return digest.hexdigest()[:16]


def find_built_library(cuda: bool | None = None) -> Path | None:
    """The cached library for this configuration, or None; never compiles, needs no compiler. ``cuda=None``: a
    CUDA build if cached, else the CPU-only one unless an automatic build here would include CUDA."""
    for variant in [cuda] if cuda is not None else [True] + ([] if wants_cuda(None) else [False]):
        if (lib := cache_root() / build_key(source_dir(), variant) / LIB_FILE).is_file():
            return lib
    return None


def first_error_line(text: str) -> str:
    """The most telling line of a build log: the first compiler error, else the last line (the exception)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line.lower() and "error building extension" not in line.lower()]
    return errors[0] if errors else (lines or ["unknown error"])[-1]


def _compile(src: Path, cuda: bool, verbose: bool, name: str = LIB_NAME) -> Path:
    if shutil.which(compiler := os.environ.get("CXX", "c++")) is None:
        raise BuildError(f"no C++ compiler found ({compiler!r} is not on PATH; install g++ or set CXX)")
    names = EMULATOR_SOURCES if name == EMULATOR_NAME else CPU_SOURCES + (CUDA_SOURCES if cuda else ())
    sources = [src / relative for relative in names]
    if missing := [str(f) for f in sources if not f.is_file()]:
        raise BuildError(f"PAMR sources not found: {', '.join(missing)}")
    (out_dir := cache_root() / build_key(src, cuda, name)).mkdir(parents=True, exist_ok=True)
    args = dict(_flags(cuda), name=name, sources=list(map(str, sources)), extra_include_paths=[str(src)],
                build_directory=str(out_dir), with_cuda=cuda, is_python_module=False, verbose=verbose)
    # The venv's bin first: `pip install ninja` puts ninja there, off PATH when the venv is not activated.
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if cuda:
        env.update(CUDA_HOME=str(cuda_home()), TORCH_CUDA_ARCH_LIST=_arch_list(True))
    log.info("aesipe: compiling %s (%s) into %s", name, "CPU+CUDA" if cuda else "CPU", out_dir)
    output = []
    with subprocess.Popen([sys.executable, "-c", _COMPILE, json.dumps(args)], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as child:
        for line in child.stdout:  # logged, and streamed with verbose
            output.append(line)
            if verbose:
                print(line, end="", flush=True)
    (log_path := out_dir / "build.log").write_text("".join(output))
    if child.returncode != 0:
        raise BuildError(f"{first_error_line(''.join(output))} (full log: {log_path})", log_path)
    return out_dir / (name + _SUFFIX)


def _load(lib: Path) -> Path:
    try:
        torch.ops.load_library(str(lib))
    except Exception as exc:
        reason = f"could not load {lib}: {first_error_line(str(exc))} (rebuild: python -m aesipe.ops build)"
        raise BuildError(reason) from exc
    _registrations.register()
    has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("aesipe::pamr", "CUDA")
    _STATE.path, _STATE.cuda, _STATE.error, _STATE.attempted = lib, has_cuda, None, True
    return lib


def build(cuda: bool | None = None, verbose: bool = False) -> Path:
    """Compile (ninja skips what is up to date) and load the library; raises ``BuildError``. ``cuda``: True
    forces the CUDA kernels (no GPU needed), False skips them, None decides. Ignores ``AESIPE_DISABLE_EXT``."""
    with _LOCK:
        if _STATE.path is not None and cuda and not _STATE.cuda:
            raise BuildError("a CPU-only aesipe::pamr library is already loaded in this process; "
                             "build the CUDA one in a fresh process: python -m aesipe.ops build --cuda")
        if _STATE.path is not None:
            return _STATE.path
        if not (src := source_dir()).is_dir():
            raise BuildError(f"PAMR source directory not found: {src}")
        return _load(_compile(src, wants_cuda(cuda), verbose))


def build_cuda_emulator(verbose: bool = False) -> Path:
    """Test build: load ``aesipe_cuda_emulator::pamr``, the CUDA kernels' thread code run on the CPU over every
    (block, thread) of their grid (cpp_ext/cuda/pamr_emulator.cpp), compiling it into the cache first if it is
    not there. Needs a C++ compiler only, no CUDA; raises ``BuildError``."""
    with _LOCK:
        if not (src := source_dir()).is_dir():
            raise BuildError(f"PAMR source directory not found: {src}")
        lib = cache_root() / build_key(src, False, EMULATOR_NAME) / (EMULATOR_NAME + _SUFFIX)
        if not lib.is_file():
            lib = _compile(src, False, verbose, EMULATOR_NAME)
        if lib != _STATE.emulator:  # one emulator library per process (it registers a namespace)
            if _STATE.emulator is not None:
                raise BuildError(f"another CUDA emulator library is loaded in this process: {_STATE.emulator}")
            try:
                torch.ops.load_library(str(lib))
            except Exception as exc:
                raise BuildError(f"could not load {lib}: {first_error_line(str(exc))}") from exc
            _STATE.emulator = lib
        return lib


def load_library() -> Path | None:
    """The loaded library: the cached build, else one compiled now; None if unavailable (see
    ``unavailable_reason``). Never raises; tries once per process (a failed build is not retried)."""
    with _LOCK:
        if _STATE.attempted:
            return _STATE.path
        _STATE.attempted = True
        if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
            _STATE.error = f"disabled by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
            return None
        try:
            return _load(lib) if (lib := find_built_library()) else build()
        except Exception as exc:  # BuildError, or anything a broken toolchain throws
            _STATE.error = str(exc) if isinstance(exc, BuildError) else f"{type(exc).__name__}: {exc}"
            return None


def library_path() -> Path | None:
    """Path of the library loaded in this process (None if none is; never builds)."""
    return _STATE.path


def unavailable_reason() -> str | None:
    """Why ``load_library`` returned None (None while untried or loaded)."""
    return _STATE.error


def _cuda_code(library: Path | None) -> list[str]:
    from ._fatbin import cuda_code

    return cuda_code(library) if library is not None else []


def info() -> dict[str, object]:
    """What a build would do here, and what is cached; never builds."""
    src, cuda, home, built = source_dir(), wants_cuda(None), cuda_home(), find_built_library()
    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "gpu_visible": torch.cuda.is_available(),
            "cuda_home": home and str(home), "cuda_kernels_on_auto_build": cuda, "cuda_arch_list": _arch_list(cuda),
            "source_dir": str(src), "cache_dir": str(cache_root() / build_key(src, cuda)),
            "cached": built is not None, "built_library": built and str(built), "built_cuda_code": _cuda_code(built),
            "disabled": os.environ.get(DISABLE_ENV, "") not in ("", "0"), "loaded": _STATE.path and str(_STATE.path)}
