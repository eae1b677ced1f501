"""``aesipe-train config``: every field of a config with its value and docstring (read from the schema's source)."""
from __future__ import annotations

from . import schema, sections, sections_refine
from .schema import RunConfig


def field_docs() -> dict[str, dict[str, str]]:
    """``{section class name: {field: docstring}}``: the string literal under each field of this module's
    dataclasses (inherited fields documented in their base class)."""
    import ast
    import inspect

    tree = ast.parse("\n".join(inspect.getsource(module) for module in (sections, sections_refine, schema)))
    docs: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        own = docs.setdefault(node.name, {})
        for current, following in zip(node.body, node.body[1:]):
            if (isinstance(current, ast.AnnAssign) and isinstance(current.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                own[current.target.id] = " ".join(following.value.value.split())
    return docs


def describe_config(cfg: RunConfig) -> list[str]:
    """Every field as ``section.field = value  # docstring``, in schema order (``aesipe-train config``)."""
    import dataclasses
    import json

    docs = field_docs()
    lines = []

    def value_text(value) -> str:
        return json.dumps(list(value) if isinstance(value, tuple) else value)

    def doc_of(obj, name: str) -> str:
        for klass in type(obj).__mro__:
            if name in docs.get(klass.__name__, {}):
                return docs[klass.__name__][name]
        return ""

    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            doc = " ".join((type(value).__doc__ or "").split())
            auto = doc.startswith(type(value).__name__ + "(")  # dataclass's generated signature, not a docstring
            lines.append(f"[{f.name}]" + (f"  # {doc}" if doc and not auto else ""))
            for inner in dataclasses.fields(value):
                doc = doc_of(value, inner.name)
                lines.append(f"{f.name}.{inner.name} = {value_text(getattr(value, inner.name))}" + (f"  # {doc}" if doc else ""))
        else:
            doc = doc_of(cfg, f.name)
            lines.append(f"{f.name} = {value_text(value)}" + (f"  # {doc}" if doc else ""))
    return lines
