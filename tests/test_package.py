"""Package-level promises: one import package, torch-free infer side, working console scripts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")


def test_import_aesipe_does_not_import_torch():
    result = _run("import sys, aesipe; assert 'torch' not in sys.modules, 'torch imported'; print(aesipe.__version__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_infer_side_runs_with_torch_blocked():
    # sys.modules['torch'] = None makes any `import torch` raise ImportError.
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
        "import aesipe.infer, aesipe.infer.cli, aesipe.contract, aesipe.utils.labelpng\n"
        "assert not any(m.startswith('aesipe.train') or m.startswith('aesipe.models') for m in sys.modules)\n"
        "print('ok')"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_no_bare_top_level_modules_installed():
    for name in ("train", "export", "infer", "cpp_ext"):
        result = _run(f"import importlib.util as u; print(u.find_spec({name!r}) is None)")
        assert result.stdout.strip() == "True", f"a bare '{name}' module is importable"


def test_lazy_pamr_attribute_resolves():
    result = _run("import aesipe; from aesipe import pamr, PAMR; print(callable(pamr), PAMR.__name__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "PAMR"]


@pytest.mark.parametrize("prog", ["aesipe-train", "aesipe-export", "aesipe-label"])
def test_console_scripts_version_and_help(prog):
    from aesipe import __version__

    exe = BIN / prog
    assert exe.exists(), f"{prog} is not installed as a console script"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"{prog} {__version__}"
    helped = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "Usage" in helped.stdout
