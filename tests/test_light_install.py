"""The torch-free install: ``pip install 'aesipe[cpu]'`` labels with ONNX Runtime and has no torch.

The slow tests build a fresh virtual environment holding only that install -- this machine's pip and package
index, a non-editable install of a copy of this checkout's sources -- and cache it under
``build/light-install/``: the venv is named by a hash of pyproject.toml (a new one rebuilds it from scratch,
about a minute), and a change of the package sources only reinstalls aesipe into it (``--no-deps``);
unchanged, it is reused as is. Without a built venv and with no package index in reach they skip, saying
so. What they label is the committed ONNX fixture (``tests/fixtures/tiny_segmenter.onnx``, remade by
``tests/fixtures/make_tiny_onnx.py``); the quick test at the top holds it to this checkout's ``aesipe.infer``.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
FIXTURE = FIXTURES / "tiny_segmenter.onnx"
CLASSES = ("background", "cat", "dog", "car")  # tests/export/tiny_models.py's CLASSES
CACHE = REPO / "build" / "light-install"
LIGHT_EXTRAS = "cpu"
COMPLETE = ".aesipe-light-install.json"
# No heavier than this on disk (apparent size of site-packages): the full install is ~5.7 GB, the aim 1/10.
MAX_LIGHT_BYTES = 570 * 2**20
HEAVY = ("torch", "torchvision", "onnx", "onnxscript", "ninja", "tomli-w", "pydensecrf2", "onnxruntime-gpu")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info", ".*")


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random uint8 RGB image (like tests/export/tiny_models.py's smooth_rgb)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8))
    return np.asarray(coarse.resize((width, height), Image.Resampling.BILINEAR))


@pytest.fixture
def images(tmp_path) -> Path:
    """Four images, two sizes, one in a sub-folder, plus a file that is not an image."""
    root = tmp_path / "images"
    for i, (rel, size) in enumerate([("a.jpg", (48, 64)), ("b.png", (48, 64)), ("sub/c.png", (37, 53)),
                                     ("sub/d.bmp", (21, 30))]):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_photo(*size, seed=i)).save(path)
    (root / "notes.txt").write_text("not an image")
    return root


def _mask_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.height, image.width


# --- the fixture still works with this checkout's aesipe.infer (main environment, quick) -------------------

def test_fixture_loads_and_labels_with_current_infer(images):
    from aesipe.infer import Labeler

    assert FIXTURE.stat().st_size < 64 * 1024, "the fixture should stay tiny"
    labeler = Labeler(FIXTURE, device="cpu")
    info = labeler.info
    assert info.model_kind == "segmenter" and info.classes == CLASSES and not info.needs_tags
    for rel in ("a.jpg", "sub/c.png", "sub/d.bmp"):
        with Image.open(images / rel) as image:
            size = (image.height, image.width)
        mask = labeler.label(images / rel)
        assert mask.dtype == np.uint8 and mask.shape == size and int(mask.max()) < len(CLASSES)


@pytest.mark.slow
def test_fixture_is_what_the_current_exporter_makes(images, tmp_path):
    """Regenerating the fixture (torch, onnx) labels like the committed file; else re-run make_tiny_onnx.py."""
    pytest.importorskip("onnx")
    from aesipe.infer import Labeler

    fresh = subprocess.run([sys.executable, str(FIXTURES / "make_tiny_onnx.py"), str(tmp_path / "fresh.onnx")],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    committed, regenerated = Labeler(FIXTURE, device="cpu"), Labeler(tmp_path / "fresh.onnx", device="cpu")
    assert regenerated.info.classes == committed.info.classes
    assert regenerated.info.input_format == committed.info.input_format
    for rel in ("a.jpg", "sub/c.png"):
        assert np.array_equal(committed.label(images / rel), regenerated.label(images / rel)), (
            "tests/fixtures/tiny_segmenter.onnx is stale: python tests/fixtures/make_tiny_onnx.py")


# --- the light install itself (a separate venv, cached) ----------------------------------------------------

def _package_dirs() -> list[str]:
    """The folders the pyproject maps into the ``aesipe`` package (``[tool.setuptools.package-dir]``)."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    return sorted(set(setuptools.get("package-dir", {"aesipe": "aesipe"}).values()))


def _source_files() -> list[Path]:
    files = []
    for folder in _package_dirs():
        for path in sorted((REPO / folder).rglob("*")):
            rel = path.relative_to(REPO / folder).parts
            if path.is_file() and not _IGNORE(str(path.parent), [path.name]) and not any(
                    part == "__pycache__" or part.startswith(".") or part.endswith(".egg-info") for part in rel):
                files.append(path)
    return files


def _keys() -> tuple[str, str]:
    """(dependencies key: Python + extras + pyproject.toml, which names the venv; sources key: + the package)."""
    digest = hashlib.sha256(f"{sys.version_info[:3]} [{LIGHT_EXTRAS}]".encode())
    digest.update((REPO / "pyproject.toml").read_bytes())
    deps = digest.hexdigest()[:16]
    for path in _source_files():
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return deps, digest.hexdigest()[:16]


def _clean_env(venv: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _tail(result: subprocess.CompletedProcess, n: int = 25) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-n:])


def _index_reachable(python: Path, scratch: Path) -> tuple[bool, str]:
    """Can this pip fetch a distribution at all (from whatever index and links it is configured with)?"""
    probe = subprocess.run([str(python), "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
                            "-d", str(scratch / "probe"), "setuptools>=68"],
                           capture_output=True, text=True, env=_clean_env(), timeout=600)
    return probe.returncode == 0, _tail(probe, 3)


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # one builder at a time (parallel pytest runs)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _copy_sources(dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in ["pyproject.toml", "README.md", *(p.name for p in REPO.glob("LICEN[CS]E*"))]:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, dest)
    for folder in _package_dirs():
        shutil.copytree(REPO / folder, dest / folder, ignore=_IGNORE)
    return dest


def _pip_install(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                           "--no-input", *args], capture_output=True, text=True, env=_clean_env(venv), cwd=cwd,
                          timeout=1500)


def _skip_if_offline(python: Path, scratch: Path) -> None:
    reachable, probe = _index_reachable(python, scratch)
    if not reachable:
        last = (probe.splitlines() or ["no output"])[-1]
        pytest.skip(f"pip cannot reach a package index to build the light install ({last})")


def _install(venv: Path, sources_key: str) -> None:
    """Build the venv: ``python -m venv`` + ``pip install COPY[cpu]`` (non-editable, from a copy of the sources).

    A venv already built from the same pyproject.toml only has aesipe itself reinstalled (``--no-deps``)
    when the package sources changed: its dependencies are what that pyproject asks for.
    """
    started = time.perf_counter()
    marker = venv / COMPLETE
    src = _copy_sources(venv.with_name(venv.name + "-src"))
    try:
        how, result = "reinstalled aesipe", None
        if marker.is_file():
            previous = marker.read_text()
            marker.unlink()
            result = _pip_install(venv, "--no-deps", "--force-reinstall", str(src), cwd=src)
            if result.returncode != 0:
                marker.write_text(previous)  # the venv still works (with the older sources); keep it
                _skip_if_offline(venv / "bin" / "python", src)
                marker.unlink()
        if result is None or result.returncode != 0:
            how = "built"
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_clean_env(), timeout=300)
            result = _pip_install(venv, f"{src}[{LIGHT_EXTRAS}]", cwd=src)
            if result.returncode != 0:
                try:
                    _skip_if_offline(venv / "bin" / "python", src)
                finally:
                    shutil.rmtree(venv, ignore_errors=True)
                pytest.fail(f"pip install '.[{LIGHT_EXTRAS}]' into a fresh venv failed:\n{_tail(result)}")
    finally:
        shutil.rmtree(src, ignore_errors=True)
    marker.write_text(json.dumps({"extras": LIGHT_EXTRAS, "sources": sources_key, how: round(
        time.perf_counter() - started, 1)}, indent=1) + "\n")


@pytest.fixture(scope="session")
def light_venv() -> Path:
    deps_key, sources_key = _keys()
    venv = CACHE / f"venv-{deps_key}"
    with _locked(CACHE / ".lock"):
        for old in CACHE.glob("venv-*"):  # other pyproject.toml versions: never reused
            if old.name not in (venv.name, venv.name + "-src"):
                shutil.rmtree(old, ignore_errors=True)
        marker = venv / COMPLETE
        if not marker.is_file() or json.loads(marker.read_text()).get("sources") != sources_key:
            _install(venv, sources_key)
    return venv


def _run(venv: Path, *args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a program of the light venv (``bin/NAME``) outside the checkout, so nothing imports from it."""
    exe = venv / "bin" / args[0]
    return subprocess.run([str(exe), *map(str, args[1:])], capture_output=True, text=True, cwd=cwd,
                          env=_clean_env(venv), timeout=timeout)


def _site_packages(venv: Path) -> Path:
    (found,) = (venv / "lib").glob("python3*/site-packages")
    return found


def _apparent_size(root: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_light_install_has_no_torch(light_venv, tmp_path):
    result = _run(light_venv, "python", "-c", "import torch", cwd=tmp_path)
    assert result.returncode != 0 and "No module named 'torch'" in result.stderr, result.stderr
    code = ("import importlib.metadata as m, json, aesipe; "
            "print(json.dumps([aesipe.__file__, sorted(d.metadata['Name'].lower() for d in m.distributions())]))")
    listed = _run(light_venv, "python", "-c", code, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    location, names = json.loads(listed.stdout)
    assert Path(location).is_relative_to(light_venv), f"aesipe imported from {location}, not the light venv"
    assert {"aesipe", "numpy", "pillow", "opencv-python-headless", "typer", "tqdm", "onnxruntime"} <= set(names)
    assert not set(HEAVY) & set(names), f"the light install pulled in {sorted(set(HEAVY) & set(names))}"
    size = _apparent_size(_site_packages(light_venv))
    assert size < MAX_LIGHT_BYTES, f"light install site-packages is {size / 2**20:.0f} MiB"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_light_install_labels_a_folder(light_venv, images, tmp_path):
    out = tmp_path / "out"
    result = _run(light_venv, "aesipe-label", FIXTURE, images, out, "--batch-size", "2", cwd=tmp_path)
    assert result.returncode == 0, _tail(result)
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["ok"] == report["summary"]["images"] == 4 and report["summary"]["failed"] == 0
    assert {r["status"] for r in report["images"].values()} == {"ok"}
    from aesipe.infer import Labeler  # this environment's labeller: the two installs agree

    here = Labeler(FIXTURE, device="cpu")
    for rel, record in report["images"].items():
        mask_path = out / record["mask"]
        with Image.open(images / rel) as image:
            assert _mask_size(mask_path) == (image.height, image.width)
        with Image.open(mask_path) as mask:
            assert (np.asarray(mask) == here.label(images / rel)).mean() > 0.999

    api = ("import sys, numpy as np; from aesipe.infer import Labeler; "
           f"m = Labeler({str(FIXTURE)!r}).label({str(images / 'a.jpg')!r}); "
           "assert 'torch' not in sys.modules; print(m.shape, m.dtype, int(m.max()))")
    called = _run(light_venv, "python", "-c", api, cwd=tmp_path)
    assert called.returncode == 0, called.stderr
    assert called.stdout.split()[:3] == ["(48,", "64)", "uint8"]

    helped = _run(light_venv, "aesipe-label", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "Usage" in helped.stdout, helped.stderr


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("prog, extra, args", [
    ("aesipe-train", "train", ["--help"]),
    ("aesipe-train", "train", ["train", "run"]),
    ("aesipe-export", "export", ["--help"]),
    ("aesipe-export", "export", ["run", "out.onnx"]),
])
def test_training_and_export_name_their_extra(light_venv, tmp_path, prog, extra, args):
    result = _run(light_venv, prog, *args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and not result.stdout, result.stdout + result.stderr
    assert lines[0].startswith(f"{prog}: error: ") and lines[0].endswith(f"pip install 'aesipe[{extra}]'"), lines
