"""Every dependency rule docs/ARCHITECTURE.md states ("Packages and dependencies"), checked on every source file
and at run time. The table below is the page's table; a rule added there must be added here.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"core": REPO / "aesipe", "train": REPO / "train", "export": REPO / "export", "infer": REPO / "infer"}
PACKAGE_OF = {"core": "aesipe", "train": "aesipe.train", "export": "aesipe.export", "infer": "aesipe.infer"}
TORCH_FREE_CORE = ("aesipe.constants", "aesipe._version", "aesipe.utils", "aesipe.config", "aesipe.contract",
                   "aesipe.imaging", "aesipe.tags", "aesipe.pseudo_labels", "aesipe.crf", "aesipe.corrections",
                   "aesipe.labelstudio_rle")
"""The core modules the torch-free labelling side may use (they import no torch, at module level or lazily)."""


@dataclass(frozen=True)
class Rule:
    files: str
    """Which files: a layer, or ``core:utils`` (the base of core)."""
    never: tuple[str, ...] = ()
    """Module prefixes these files never import."""
    only_aesipe: tuple[str, ...] | None = None
    """If set: the only aesipe modules these files may import (besides their own package)."""
    allowed: frozenset = field(default_factory=frozenset)
    """(file name, enclosing class or None) exceptions, each stated on the page."""


RULES = [
    Rule("core:utils", only_aesipe=("aesipe.constants", "aesipe._version", "aesipe.utils")),
    Rule("core", never=("aesipe.train", "aesipe.export", "aesipe.infer")),
    Rule("train", never=("aesipe.export", "aesipe.infer"), allowed=frozenset({("demo.py", None)})),
    Rule("export", never=("aesipe.train",)),
    Rule("infer", never=("torch", "torchvision"), only_aesipe=TORCH_FREE_CORE,
         allowed=frozenset({("session.py", "TorchScriptBackend")})),
]


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


def _files(rule: Rule) -> list[tuple[str, Path]]:
    layer, _, part = rule.files.partition(":")
    folder = FOLDERS[layer] / part if part else FOLDERS[layer]
    return [(layer, path) for path in sorted(folder.rglob("*.py"))]


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(rule: Rule) -> list[str]:
    bad = []
    for layer, path in _files(rule):
        own = PACKAGE_OF[layer]
        for name, owner, line in _imports(layer, path):
            if (path.name, owner) in rule.allowed:
                continue
            broke = _under(name, rule.never)
            if rule.only_aesipe is not None and _under(name, ("aesipe",)) and not _under(name, (own,)):
                # ``from aesipe import crf`` names the package and then the module: judge the module
                broke = broke or (name != "aesipe" and not _under(name, rule.only_aesipe))
            if broke:
                shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
                bad.append(f"{shown}:{line} imports {name}")
    return bad


@pytest.mark.parametrize("rule", RULES, ids=[r.files for r in RULES])
def test_every_source_file_keeps_the_rules(rule):
    bad = _violations(rule)
    assert not bad, "\n".join(bad)


def test_the_rules_are_the_pages(tmp_path):
    """The table on docs/ARCHITECTURE.md names the same rules as this module (a rule stated there and not
    checked here would be a promise nobody keeps)."""
    page = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    for rule in RULES:
        assert f"`{rule.files}`" in page, f"the page does not state the rule for {rule.files}"
    for prefix in TORCH_FREE_CORE:
        assert f"`{prefix}`" in page, f"the page does not list {prefix} as torch-free core"


def test_the_checker_sees_relative_and_lazy_imports(tmp_path, monkeypatch):
    fake = tmp_path / "export"
    fake.mkdir()
    (fake / "x.py").write_text("def f():\n    from ..train import config\n    import torch\n")
    monkeypatch.setitem(FOLDERS, "export", fake)
    found = [name for name, _, _ in _imports("export", fake / "x.py")]
    assert "aesipe.train" in found and "aesipe.train.config" in found and "torch" in found
    assert _violations(Rule("export", never=("aesipe.train",))) == ["x.py:2 imports aesipe.train",
                                                                     "x.py:2 imports aesipe.train.config"]
    monkeypatch.setitem(FOLDERS, "infer", fake)
    assert "x.py:3 imports torch" in _violations(Rule("infer", never=("torch",), only_aesipe=TORCH_FREE_CORE))


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


def test_every_infer_module_and_the_torch_free_core_import_with_torch_blocked():
    code = (
        "import sys, importlib, pkgutil; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
        f"for name in {list(TORCH_FREE_CORE)!r}:\n"
        "    importlib.import_module(name)\n"
        "import aesipe.utils, aesipe.config\n"
        "for package in (aesipe.utils, aesipe.config):\n"
        "    for info in pkgutil.iter_modules(package.__path__):\n"
        "        importlib.import_module(package.__name__ + '.' + info.name)\n"
        "import aesipe.infer\n"
        "for info in pkgutil.iter_modules(aesipe.infer.__path__):\n"
        "    importlib.import_module('aesipe.infer.' + info.name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['aesipe', 'train'], ['aesipe', 'export'],\n"
        "                                                            ['aesipe', 'models'], ['aesipe', 'ops'])))\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
