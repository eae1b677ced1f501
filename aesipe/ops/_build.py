"""Build, cache and load the compiled PAMR op library (``aesipe::pamr``).

Installing aesipe needs no compiler: the library is compiled on first use with
``torch.utils.cpp_extension.load(..., is_python_module=False)`` into a cache directory keyed by a hash
of the C++/CUDA sources, the torch version, the CUDA flag/architectures and the build flags, then
loaded with ``torch.ops.load_library``. A file lock keeps two processes from building the same key at
once; a finished build is marked by ``build.json`` and later processes load it without a compiler.

CUDA kernels are compiled only when torch is a CUDA build, nvcc is found, and a GPU is visible or the
caller forces ``cuda=True`` (``python -m aesipe.ops build --cuda`` builds ahead of time on a machine
without a GPU). Any failure is recorded with the first error line and the path of the full log; the
public API then falls back to the reference (``aesipe.ops.pamr``, one warning per device type).

Environment: ``AESIPE_DISABLE_EXT=1`` never loads the library (forces the reference);
``AESIPE_CACHE_DIR`` moves the cache root (default ``$XDG_CACHE_HOME/aesipe`` or ``~/.cache/aesipe``;
libraries go to ``<root>/ext/<key>``); ``AESIPE_EXT_SOURCE_DIR`` builds from another source tree;
``CUDA_HOME`` / ``TORCH_CUDA_ARCH_LIST`` / ``CXX`` / ``MAX_JOBS`` are honoured as by cpp_extension.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import json
import logging
import os
import platform
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

LIB_NAME = "aesipe_pamr"
# Part of the cache key: bump when the build recipe (flags, file list) changes.
RECIPE_VERSION = "1"
# Used when no GPU is visible to pick architectures from: Ampere/Hopper cubins plus PTX that newer
# GPUs JIT-compile. Override with TORCH_CUDA_ARCH_LIST (e.g. "7.5" for a T4).
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"
DISABLE_ENV = "AESIPE_DISABLE_EXT"
CACHE_ENV = "AESIPE_CACHE_DIR"
SOURCE_ENV = "AESIPE_EXT_SOURCE_DIR"

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


_STATE = _State()
_LOCK = threading.RLock()


# ----------------------------------------------------------------------------- locations


def source_dir() -> Path:
    """The C++/CUDA sources: ``$AESIPE_EXT_SOURCE_DIR``, the installed ``aesipe.cpp_ext`` package data,
    or ``<repo>/cpp_ext`` when running from a source checkout."""
    override = os.environ.get(SOURCE_ENV)
    if override:
        return Path(override).expanduser()
    try:
        installed = Path(str(importlib.resources.files("aesipe.cpp_ext")))
        if (installed / "pamr.cpp").is_file():
            return installed
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "cpp_ext"


def cache_root() -> Path:
    """Directory holding one sub-directory per build key."""
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base).expanduser() / "ext"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "aesipe" / "ext"


def cuda_home() -> Path | None:
    """A CUDA toolkit with nvcc: ``CUDA_HOME``/``CUDA_PATH``, ``/usr/local/cuda``, then nvcc's location.

    ``nvcc`` on PATH may be a wrapper script (``/usr/local/bin/nvcc``), so its parent's parent is only
    trusted when it really holds a toolkit (``include/cuda_runtime.h``).
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "bin" / "nvcc").exists():
            if (Path(candidate) / "include" / "cuda_runtime.h").exists():
                return Path(candidate)
    return None


# ----------------------------------------------------------------------------- build recipe


def _source_files(src: Path, cuda: bool) -> list[Path]:
    names = ["pamr.cpp", "cpu/pamr_kernel.cpp"] + (["cuda/pamr_kernel.cu"] if cuda else [])
    files = [src / name for name in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise BuildError(f"PAMR sources not found: {', '.join(missing)}")
    return files


def _hashed_files(src: Path) -> list[Path]:
    patterns = ("*.cpp", "*.h", "*.cu", "*.cuh")
    return sorted({f for pattern in patterns for f in src.rglob(pattern) if f.is_file()})


def _cuda_problems() -> list[str]:
    problems = []
    if not torch.version.cuda:
        problems.append(f"torch {torch.__version__} is not a CUDA build")
    if cuda_home() is None:
        problems.append("nvcc was not found (set CUDA_HOME to the CUDA toolkit)")
    return problems


def wants_cuda(cuda: bool | None) -> bool:
    """Resolve the ``cuda`` request: None = only if torch+nvcc can and a GPU is visible."""
    if cuda is False:
        return False
    problems = _cuda_problems()
    if cuda is None:
        return not problems and torch.cuda.is_available()
    if problems:
        raise BuildError("cannot build the CUDA kernels: " + "; ".join(problems))
    return True


def _arch_list(cuda: bool) -> str | None:
    if not cuda:
        return None
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    if torch.cuda.is_available():
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{major}.{minor}" for major, minor in sorted(caps))
    # Without a GPU, cpp_extension cannot guess (it crashes with IndexError): pick for it.
    return DEFAULT_CUDA_ARCH_LIST


def _flags(cuda: bool) -> dict[str, list[str]]:
    cflags, ldflags = ["-O3"], []
    # at::parallel_for is an inline OpenMP loop in torch's headers: without -fopenmp it runs serially.
    # Linux only: Apple clang has no -fopenmp (the kernel then runs on one thread, still correct).
    if torch.backends.openmp.is_available() and sys.platform.startswith("linux"):
        cflags.append("-fopenmp")
        ldflags.append("-fopenmp")
    if sys.platform.startswith("linux"):
        # cpp_extension links libtorch_python even into a non-Python library; where the toolchain does
        # not already default to --as-needed, this drops it, so a plain libtorch (C++) process can load the op.
        ldflags.append("-Wl,--as-needed")
    cuda_cflags = []
    if cuda:
        cflags.append("-DAESIPE_WITH_CUDA")
        cuda_cflags = ["-O3", "-DAESIPE_WITH_CUDA"]
    return {"cflags": cflags, "cuda_cflags": cuda_cflags, "ldflags": ldflags}


def build_key(src: Path, cuda: bool) -> str:
    """Hash of everything the compiled library depends on."""
    digest = hashlib.sha256()
    for f in _hashed_files(src):
        digest.update(f.relative_to(src).as_posix().encode())
        digest.update(f.read_bytes())
    recipe = {
        "recipe": RECIPE_VERSION,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda": cuda,
        "arch": _arch_list(cuda),
        "flags": _flags(cuda),
        "cxx": os.environ.get("CXX", ""),
        "platform": [sys.platform, platform.machine()],
    }
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _import_cpp_extension():
    # Its import logs "No CUDA runtime is found, using CUDA_HOME=..." on any GPU-less machine with a
    # CUDA torch, even for a CPU-only build: noise that reads like an error, so mute that one import.
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


@contextlib.contextmanager
def _cuda_environment(cuda: bool) -> Iterator[None]:
    """Set CUDA_HOME and TORCH_CUDA_ARCH_LIST for cpp_extension during the build, then restore them.

    cpp_extension reads CUDA_HOME once, at import, into a module global (and guesses wrong next to an
    nvcc wrapper script), so the global is patched as well as the environment.
    """
    names = ("CUDA_HOME", "TORCH_CUDA_ARCH_LIST")
    saved_env = {name: os.environ.get(name) for name in names}
    home = cuda_home() if cuda else None
    if home is not None:
        os.environ["CUDA_HOME"] = str(home)
        os.environ["TORCH_CUDA_ARCH_LIST"] = _arch_list(cuda) or ""
    cpp_extension = _import_cpp_extension()
    saved_home = cpp_extension.CUDA_HOME
    if home is not None:
        cpp_extension.CUDA_HOME = str(home)
    try:
        yield
    finally:
        cpp_extension.CUDA_HOME = saved_home
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def first_error_line(text: str) -> str:
    """The most telling line of a build log: the first compiler error, else the first line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() and not line.lower().startswith("error building extension"):
            return line
    return lines[0] if lines else "unknown error"


def _compile(src: Path, out_dir: Path, cuda: bool, verbose: bool) -> Path:
    """Run cpp_extension into ``out_dir``; returns the library path. The log lands in build.log."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise BuildError(f"no C++ compiler found ({compiler!r} is not on PATH; install g++ or set CXX)")
    sources = [str(f) for f in _source_files(src, cuda)]
    flags = _flags(cuda)
    log_path = out_dir / "build.log"
    started = time.monotonic()
    log.info("aesipe: compiling the PAMR op library (%s) into %s", "CPU+CUDA" if cuda else "CPU", out_dir)
    with _cuda_environment(cuda):
        cpp_extension = _import_cpp_extension()
        try:
            lib = cpp_extension.load(
                name=LIB_NAME,
                sources=sources,
                extra_cflags=flags["cflags"],
                extra_cuda_cflags=flags["cuda_cflags"],
                extra_ldflags=flags["ldflags"],
                extra_include_paths=[str(src)],
                build_directory=str(out_dir),
                with_cuda=cuda,
                is_python_module=False,
                verbose=verbose,
            )
        except Exception as exc:  # compiler errors arrive as RuntimeError, odd setups as anything
            text = f"{type(exc).__name__}: {exc}"
            log_path.write_text(text + ("\n(see the verbose output above)" if verbose else "") + "\n")
            raise BuildError(f"{first_error_line(str(exc))} (full log: {log_path})", log_path) from exc
    log_path.write_text(f"built in {time.monotonic() - started:.1f} s\n")
    return Path(lib)


def _build_and_load(cuda: bool | None, verbose: bool) -> tuple[Path, bool]:
    use_cuda = wants_cuda(cuda)
    src = source_dir()
    if not src.is_dir():
        raise BuildError(f"PAMR source directory not found: {src}")
    out_dir = cache_root() / build_key(src, use_cuda)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "build.json"
    from filelock import FileLock  # a torch dependency

    with FileLock(str(out_dir) + ".lock"):
        lib = None
        if manifest.is_file():
            lib = out_dir / json.loads(manifest.read_text())["library"]
        if lib is None or not lib.is_file():
            lib = _compile(src, out_dir, use_cuda, verbose)
            meta = {
                "library": lib.name,
                "cuda": use_cuda,
                "arch": _arch_list(use_cuda),
                "torch": torch.__version__,
                "sources": str(src),
                "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            manifest.write_text(json.dumps(meta, indent=2) + "\n")
    try:
        torch.ops.load_library(str(lib))
    except Exception as exc:
        raise BuildError(f"could not load {lib}: {first_error_line(str(exc))}") from exc
    from . import _registrations

    _registrations.register()
    return lib, use_cuda


# ----------------------------------------------------------------------------- public functions


def build(cuda: bool | None = None, verbose: bool = False) -> Path:
    """Compile (or reuse the cached) library and load it into this process; raises ``BuildError``.

    ``cuda``: True forces the CUDA kernels (no GPU needed to compile), False skips them, None decides
    automatically. Ignores ``AESIPE_DISABLE_EXT``: this is the explicit build command.
    """
    with _LOCK:
        if _STATE.path is not None:
            if cuda and not _STATE.cuda:
                raise BuildError(
                    "a CPU-only aesipe::pamr library is already loaded in this process; "
                    "build the CUDA one in a fresh process: python -m aesipe.ops build --cuda"
                )
            return _STATE.path
        path, has_cuda = _build_and_load(cuda, verbose)
        _STATE.path, _STATE.cuda, _STATE.error, _STATE.attempted = path, has_cuda, None, True
        return path


def load_library(cuda: bool | None = None) -> Path | None:
    """The loaded library, building it on first use; None if unavailable (see ``unavailable_reason``).

    Never raises, and tries at most once per process: a failed build is not retried on every call.
    """
    if _STATE.path is not None or _STATE.attempted:
        return _STATE.path
    with _LOCK:
        if _STATE.attempted:
            return _STATE.path
        _STATE.attempted = True
        if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
            _STATE.error = f"disabled by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
            return None
        try:
            return build(cuda)
        except Exception as exc:  # BuildError, or anything a broken toolchain throws
            _STATE.error = str(exc) if isinstance(exc, BuildError) else f"{type(exc).__name__}: {exc}"
            return None


def library_path() -> Path | None:
    """Path of the library loaded in this process (None if not loaded yet; never builds).

    Export code passes it to ``torch.ops.load_library`` before loading TorchScript files.
    """
    return _STATE.path


def unavailable_reason() -> str | None:
    """Why ``load_library`` returned None (None while untried or loaded)."""
    return _STATE.error


def info() -> dict[str, object]:
    """What a build would do here, and what is cached; never builds."""
    src = source_dir()
    try:
        cuda = wants_cuda(None)
        key = build_key(src, cuda) if src.is_dir() else None
    except Exception as exc:  # report, don't fail: this is a diagnostic
        cuda, key = False, f"unavailable ({exc})"
    cached = key is not None and (cache_root() / str(key) / "build.json").is_file()
    home = cuda_home()
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "gpu_visible": torch.cuda.is_available(),
        "cuda_home": str(home) if home else None,
        "cuda_kernels_on_auto_build": cuda,
        "cuda_arch_list": _arch_list(cuda),
        "source_dir": str(src),
        "cache_dir": str(cache_root() / str(key)) if key else str(cache_root()),
        "cached": cached,
        "disabled": os.environ.get(DISABLE_ENV, "") not in ("", "0"),
        "loaded": str(_STATE.path) if _STATE.path else None,
    }
