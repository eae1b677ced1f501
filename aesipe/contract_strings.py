"""Specs of the metadata's top-level values, which are all strings (JSON, and numbers written as text), the
rules between keys, and the key paths a spec declares or a value holds (what the contract test compares).
Part of the one mechanism of ``aesipe.contract_fields``; standard library only."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from .contract_fields import AnyOf, FieldError, ListOf, Nullable, Number, Object, Spec, Violation, shown


@dataclass(frozen=True)
class Json(Spec):
    """A string holding JSON that ``inner`` accepts; ``empty`` is what "" means (``...``: "" is refused).
    NaN and Infinity are decoded (Python writes them) for ``Number`` to refuse with its own message."""

    inner: Spec
    empty: Any = ...

    def parse(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise FieldError(path, f"must be a string of JSON, got {shown(value)}")
        if value == "" and self.empty is not ...:
            return self.empty
        try:
            decoded = json.loads(value)
        except ValueError:
            raise FieldError(path, f"is not valid JSON: {shown(value)}") from None
        return self.inner.parse(decoded, path)

    def violations(self, valid: Any) -> Iterator[Violation]:
        yield "{not json", "not JSON"
        yield "NaN", "a bare NaN"
        if self.empty is ...:
            yield "", "empty"
        if valid == "":
            return
        for bad, why in self.inner.violations(json.loads(valid)):
            try:
                yield json.dumps(bad, allow_nan=True), why
            except (TypeError, ValueError):
                continue


@dataclass(frozen=True)
class IntText(Spec):
    """A string of a decimal integer in [minimum, maximum]."""

    minimum: int
    maximum: int

    def parse(self, value: Any, path: str) -> int:
        text = value.strip() if isinstance(value, str) else None
        if text is None or not re.fullmatch(r"-?[0-9]+", text):
            raise FieldError(path, f"must be a whole number, got {shown(value)}")
        number = int(text)
        if not self.minimum <= number <= self.maximum:
            raise FieldError(path, f"must lie in {self.minimum}..{self.maximum}, got {number}")
        return number

    def violations(self, valid: Any) -> Iterator[Violation]:
        yield "twenty", "a word"
        yield "1.5", "a fraction"
        yield "", "empty"
        yield "\u0662\u0660", "non-ASCII digits"
        yield "--3", "two signs"
        yield str(self.minimum - 1), "below the minimum"
        yield str(self.maximum + 1), "above the maximum"


@dataclass(frozen=True)
class NumberText(Spec):
    """A string of a finite number that ``number`` accepts."""

    number: Number

    def parse(self, value: Any, path: str) -> float:
        try:
            number = float(value) if isinstance(value, str) else None
        except ValueError:
            number = None
        if number is None:
            raise FieldError(path, f"must be a number, got {shown(value)}")
        return self.number.parse(number, path)

    def violations(self, valid: Any) -> Iterator[Violation]:
        yield "abc", "a word"
        yield "", "empty"
        for bad, why in self.number.violations(float(valid)):
            if isinstance(bad, float):
                yield repr(bad), why


@dataclass(frozen=True)
class Check:
    """A rule between fields (``check(parsed) -> problem or None``); ``breaking(meta) -> meta`` makes a
    valid metadata map that breaks it, for the test."""

    name: str
    check: Callable[[Mapping[str, Any]], str | None]
    breaking: Callable[[dict[str, str]], dict[str, str]]


def key_paths(spec: Spec, prefix: str) -> Iterator[str]:
    """Every dotted key path a spec declares (list items as ``[]``)."""
    yield prefix
    if isinstance(spec, Json):
        yield from list(key_paths(spec.inner, prefix))[1:]
    elif isinstance(spec, Nullable):
        yield from list(key_paths(spec.inner, prefix))[1:]
    elif isinstance(spec, ListOf):
        yield from key_paths(spec.item, prefix + "[]")
    elif isinstance(spec, Object):
        for key, member in spec.members.items():
            yield from key_paths(member.spec, f"{prefix}.{key}")
    elif isinstance(spec, AnyOf):
        for option in spec.options:
            yield from list(key_paths(option, prefix))[1:]


def value_paths(value: Any, prefix: str) -> Iterator[str]:
    """Every dotted key path a decoded JSON value holds (list items as ``[]``)."""
    yield prefix
    if isinstance(value, list):
        for item in value:
            yield from value_paths(item, prefix + "[]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from value_paths(item, f"{prefix}.{key}")


__all__ = ["Check", "IntText", "Json", "NumberText", "key_paths", "value_paths"]
