"""Typed configuration machinery: frozen dataclasses, TOML recipe files and dotted command-line overrides.

Resolution order is always: dataclass defaults <- recipe file (only the keys it names) <- overrides
given as ``section.field=value``. Unknown keys fail with a "did you mean" hint. The resolved config is
a plain nested dict when saved (``config.toml`` in a run directory, ``"config"`` inside checkpoints),
so a later stage or ``aesipe-export`` rebuilds exactly the same objects with ``from_dict``.

A dataclass validates its own values in ``__post_init__`` by raising ``FieldError(field, message)``;
``from_dict`` turns that into one ``ConfigError`` line naming the dotted key. A class may declare
``__config_aliases__`` ({old dotted key: new dotted key}) and ``__config_upgrade__(data, source)`` for keys
that moved: overrides and recipe files written for the old layout keep working.

Stdlib only (plus ``tomli_w`` for writing), so the infer side may import it without torch.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from ..utils.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A user-caused configuration problem; the message is one line meant for the terminal (a ``UserError``, so
    the CLIs' one-line handling of user errors covers it without knowing the config)."""


class FieldError(ValueError):
    """Raised by a config dataclass's ``__post_init__``: ``field`` has a value it cannot take."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field} {message}")
        self.field, self.message = field, message


def _did_you_mean(name: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert ``value`` (from TOML or a CLI string) to the annotated type ``hint``."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(hint)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: cannot be None")
    if origin is Literal:
        choices = get_args(hint)
        for choice in choices:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
    if origin is tuple:
        args = get_args(hint)
        if isinstance(value, str):
            value = _parse_sequence(value, where)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_dict(hint, value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(as_float)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        return str(value)
    raise ConfigError(f"{where}: unsupported config type {hint!r}")


def _parse_sequence(text: str, where: str) -> list:
    """'1,2,4' or '[1, 2, 4]' or '' -> list of scalars (kept as strings/numbers for _coerce)."""
    text = text.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(f"{where}: cannot parse list {text!r}") from None
    return [part.strip() for part in text.split(",") if part.strip()]


def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a (possibly partial) nested dict; missing keys take defaults."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown config key {path!r}{_did_you_mean(key, names)}")
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        obj = cls(**kwargs)
    except FieldError as exc:
        raise ConfigError(f"{where + '.' if where else ''}{exc.field} {exc.message}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """Nested plain dict (tuples become lists) suitable for TOML/JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return plain(obj)


def _without_none(data: Any) -> Any:
    # TOML has no null: omitted keys mean "default", so a None field is dropped on write and
    # comes back as its default (all Optional fields default to None).
    if isinstance(data, dict):
        return {k: _without_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_without_none(v) for v in data]
    return data


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(cls: type, overrides: typing.Iterable[str]) -> dict[str, Any]:
    """``["train.lr=0.1", "model.backbone=resnet50"]`` -> nested dict, checked against ``cls``."""
    result: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        dotted, raw = item.split("=", 1)
        dotted = dotted.strip().lstrip("-").replace("-", "_")
        dotted = getattr(cls, "__config_aliases__", {}).get(dotted, dotted)
        keys = [k.strip() for k in dotted.split(".")]
        target: Any = cls
        for depth, key in enumerate(keys):
            if not dataclasses.is_dataclass(target):
                raise ConfigError(f"override {dotted!r}: {'.'.join(keys[:depth])!r} is not a section")
            names = {f.name for f in dataclasses.fields(target)}
            if key not in names:
                raise ConfigError(f"unknown config key {'.'.join(keys[:depth + 1])!r}{_did_you_mean(key, names)}")
            target = _hints(target)[key]
        node = result
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = raw.strip()
    return result


def load_config(
    cls: type[T],
    recipe: str | Path | None = None,
    overrides: typing.Iterable[str] = (),
    base: dict[str, Any] | None = None,
) -> T:
    """Defaults <- ``base`` (e.g. a saved run config) <- recipe file <- dotted overrides."""
    data: dict[str, Any] = dict(base or {})
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"recipe file not found: {path}")
        try:
            recipe_data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from None
        upgrade = getattr(cls, "__config_upgrade__", None)
        data = merge(data, upgrade(recipe_data, str(path)) if upgrade else recipe_data)
    data = merge(data, parse_overrides(cls, overrides))
    return from_dict(cls, data)


def save_config(obj: Any, path: str | Path) -> None:
    import tomli_w

    from ..utils.atomic import atomic_write_bytes

    atomic_write_bytes(Path(path), tomli_w.dumps(_without_none(to_dict(obj))).encode())


def config_hash(obj: Any) -> str:
    """Stable short hash of a config (or any section of one) for run manifests."""
    blob = json.dumps(to_dict(obj) if dataclasses.is_dataclass(obj) else obj, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
