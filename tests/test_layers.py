"""docs/ARCHITECTURE.md's dependency rule, checked on the source and at run time.

core (aesipe/) <- training (train/) <- export (export/) -> exported file -> infer (infer/):
- core never imports aesipe.train, aesipe.export or aesipe.infer;
- export never imports aesipe.train;
- infer imports neither torch nor aesipe.train / aesipe.export / aesipe.models, except that the
  TorchScript backend imports torch (and the op library's loader) lazily: the ONNX path never does.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"core": REPO / "aesipe", "train": REPO / "train", "export": REPO / "export", "infer": REPO / "infer"}
PACKAGE_OF = {"core": "aesipe", "train": "aesipe.train", "export": "aesipe.export", "infer": "aesipe.infer"}
FORBIDDEN = {
    "core": ("aesipe.train", "aesipe.export", "aesipe.infer"),
    "export": ("aesipe.train",),
    "infer": ("torch", "torchvision", "aesipe.train", "aesipe.export", "aesipe.models", "aesipe.ops"),
}
# (file, enclosing class) allowed to break infer's rule: the TorchScript backend needs torch by definition.
ALLOWED = {("session.py", "TorchScriptBackend")}


def _module_name(layer: str, path: Path) -> str:
    parts = list(path.relative_to(FOLDERS[layer]).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE_OF[layer], *parts])


def _imports(layer: str, path: Path):
    """(imported module, enclosing class or None, line) for every import statement in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(layer, path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    classes: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for inner in ast.walk(node):
                classes.setdefault(id(inner), node.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            yield name, classes.get(id(node)), node.lineno


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_source_file_imports_across_the_layers(layer):
    bad = []
    for path in sorted(FOLDERS[layer].rglob("*.py")):
        for name, owner, line in _imports(layer, path):
            if (path.name, owner) in ALLOWED:
                continue
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_relative_and_lazy_imports(tmp_path, monkeypatch):
    fake = tmp_path / "export"
    fake.mkdir()
    (fake / "x.py").write_text("def f():\n    from ..train import config\n    import torch\n")
    monkeypatch.setitem(FOLDERS, "export", fake)
    found = [name for name, _, _ in _imports("export", fake / "x.py")]
    assert "aesipe.train" in found and "aesipe.train.config" in found and "torch" in found


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")


def test_core_and_export_import_without_training_code():
    code = (
        "import sys, importlib\n"
        "for name in ['aesipe.config', 'aesipe.data', 'aesipe.models.aesipe_net', 'aesipe.models.pseudo_maps',\n"
        "             'aesipe.ops', 'aesipe.pseudo_labels', 'aesipe.imaging', 'aesipe.tags', 'aesipe.crf',\n"
        "             'aesipe.contract', 'aesipe.export.api', 'aesipe.export.cli', 'aesipe.export.verify']:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('aesipe.train')))\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_infer_module_imports_with_torch_blocked():
    code = (
        "import sys, importlib, pkgutil; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
        "import aesipe.infer\n"
        "for info in pkgutil.iter_modules(aesipe.infer.__path__):\n"
        "    importlib.import_module('aesipe.infer.' + info.name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['aesipe', 'train'], ['aesipe', 'export'],\n"
        "                                                            ['aesipe', 'models'], ['aesipe', 'ops'])))\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
