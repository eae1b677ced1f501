"""Typed field specifications: the one mechanism that checks every value of the export metadata.

Each spec does two things from the same declaration:

- ``parse(value, path)`` checks a value (type, range, structure) and returns it parsed, or raises
  ``FieldError`` naming the dotted path of the offending value;
- ``violations(valid)`` derives, from a valid value of the field, values the spec must refuse (wrong type,
  out of range, too short or too long, duplicated, missing or unknown keys, ...).

``tests/core/test_metadata_contract.py`` mutates valid files' metadata with every violation every spec
derives and requires each to be refused: a key cannot be declared without checks of its type, range and
structure, nor written without being declared (the ranges themselves are pinned by the issue's cases there).
Values arrive as the JSON types ``json.loads`` makes (``bool`` is never an integer here).
The specs of the top-level values (strings: JSON, numbers as text) are in ``aesipe.contract_strings``.
Standard library only: the torch-free labelling side imports it.
"""
from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

Violation = tuple[Any, str]
"""(a value the spec must refuse, what is wrong with it)."""


class FieldError(ValueError):
    """``path`` (dotted, ``[i]`` for list items) holds a value its spec refuses; ``problem`` says why."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


def shown(value: Any) -> str:
    """A short, single-line rendering of a value for an error message (control characters escaped)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def text_problem(text: str, max_length: int) -> str | None:
    """Why ``text`` is not a single line of printable text of at most ``max_length`` characters, or None."""
    if len(text) > max_length:
        return f"is {len(text)} characters long (at most {max_length})"
    bad = next((c for c in text if unicodedata.category(c)[0] == "C"), None)
    if bad is not None:
        return f"contains the control or format character {bad!r} (U+{ord(bad):04X})"
    return None


class Spec:
    """A check of one JSON value. Subclasses implement ``parse`` and ``violations``."""

    def parse(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def violations(self, valid: Any) -> Iterator[Violation]:
        raise NotImplementedError

    def refuses(self, value: Any) -> bool:
        try:
            self.parse(value, "")
        except FieldError:
            return True
        return False


def _wrong_types(*kinds: str) -> list[Violation]:
    samples = {"string": "x", "integer": 7, "number": 1.5, "boolean": True, "null": None, "list": [], "object": {}}
    return [(v, f"a JSON {k}") for k, v in samples.items() if k not in kinds]


@dataclass(frozen=True)
class Boolean(Spec):
    def parse(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise FieldError(path, f"must be true or false, got {shown(value)}")
        return value

    def violations(self, valid: Any) -> Iterator[Violation]:
        yield from _wrong_types("boolean")
        yield "true", "a string"
        yield 1, "an integer"


@dataclass(frozen=True)
class Integer(Spec):
    minimum: int
    maximum: int

    def parse(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(path, f"must be an integer, got {shown(value)}")
        if not self.minimum <= value <= self.maximum:
            raise FieldError(path, f"must lie in {self.minimum}..{self.maximum}, got {value}")
        return value

    def violations(self, valid: Any) -> Iterator[Violation]:
        yield from _wrong_types("integer")
        yield float(self.minimum), "a float"
        yield str(self.minimum), "a string of digits"
        yield self.minimum - 1, "below the minimum"
        yield self.maximum + 1, "above the maximum"


@dataclass(frozen=True)
class Number(Spec):
    """A finite JSON number (integer or float) in [minimum, maximum]; ``above`` makes the minimum exclusive."""

    minimum: float
    maximum: float
    above: bool = False

    def parse(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(path, f"must be a number, got {shown(value)}")
        value = float(value)
        low_ok = value > self.minimum if self.above else value >= self.minimum
        if not math.isfinite(value) or not low_ok or value > self.maximum:
            low = f"> {self.minimum:g}" if self.above else f">= {self.minimum:g}"
            raise FieldError(path, f"must be a finite number {low} and <= {self.maximum:g}, got {shown(value)}")
        return value

    def violations(self, valid: Any) -> Iterator[Violation]:
        yield from _wrong_types("integer", "number")
        yield "nan", "a string"
        yield "1.0", "a string of digits"
        yield math.nan, "NaN"
        yield math.inf, "infinite"
        yield -math.inf, "minus infinite"
        yield (self.minimum if self.above else self.minimum - 1.0), "below the minimum"
        yield self.maximum * 2 + 1.0, "above the maximum"


@dataclass(frozen=True)
class Text(Spec):
    """One line of printable text (no control or format characters), ``min_length``..``max_length`` long;
    ``forbidden``: characters that would break a file format the value is written into."""

    max_length: int
    min_length: int = 1
    forbidden: str = ""
    no_spaces: bool = False

    def problem(self, value: str) -> str | None:
        """What is wrong with the string ``value`` (None: nothing)."""
        if len(value) < self.min_length:
            return "must not be empty"
        problem = text_problem(value, self.max_length)
        if problem is None and self.no_spaces and any(c.isspace() for c in value):
            problem = "contains a space"
        bad = next((c for c in value if c in self.forbidden), None)
        if problem is None and bad is not None:
            problem = f"contains {bad!r}"
        return problem

    def parse(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise FieldError(path, f"must be a string, got {shown(value)}")
        problem = self.problem(value)
        if problem:
            raise FieldError(path, problem if not value else f"{problem}: {shown(value)}")
        return value

    def violations(self, valid: Any) -> Iterator[Violation]:
        yield from _wrong_types("string")
        if self.min_length > 0:
            yield "", "empty"
        base = valid if isinstance(valid, str) and valid else "x"
        yield base + "\nforged: line", "a newline"
        yield base + "\x00", "a NUL character"
        yield base + "\u202e", "a right-to-left override"
        yield "x" * (self.max_length + 1), "too long"
        if self.no_spaces:
            yield base + " x", "a space"
        for char in self.forbidden:
            yield base + char + "x", f"the character {char!r}"


@dataclass(frozen=True)
class OneOf(Spec):
    """One of a fixed set of strings (what aesipe knows how to handle)."""

    choices: tuple[str, ...]

    def parse(self, value: Any, path: str) -> str:
        if value not in self.choices or not isinstance(value, str):
            raise FieldError(path, f"must be one of {', '.join(self.choices)}, got {shown(value)}")
        return value

    def violations(self, valid: Any) -> Iterator[Violation]:
        yield from _wrong_types("string")
        yield "unknown-choice", "an unknown choice"
        yield str(valid).upper() + "x", "a near miss"


@dataclass(frozen=True)
class Nullable(Spec):
    """``inner`` or JSON null; ``example`` is a valid non-null value (violations derive from it when the
    valid file holds null)."""

    inner: Spec
    example: Any

    def parse(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.parse(value, path)

    def violations(self, valid: Any) -> Iterator[Violation]:
        for value, why in self.inner.violations(self.example if valid is None else valid):
            if value is not None:
                yield value, why


@dataclass(frozen=True)
class AnyOf(Spec):
    """A value at least one of ``options`` accepts (the first that does parses it)."""

    options: tuple[Spec, ...]
    description: str

    def parse(self, value: Any, path: str) -> Any:
        for option in self.options:
            if not option.refuses(value):
                return option.parse(value, path)
        raise FieldError(path, f"must be {self.description}, got {shown(value)}")

    def violations(self, valid: Any) -> Iterator[Violation]:
        for option in self.options:
            for value, why in option.violations(valid):
                if all(o.refuses(value) for o in self.options):
                    yield value, why


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec
    min_length: int
    max_length: int
    unique: bool = False

    def parse(self, value: Any, path: str) -> list:
        if not isinstance(value, list):
            raise FieldError(path, f"must be a JSON list, got {shown(value)}")
        if not self.min_length <= len(value) <= self.max_length:
            size = (f"{self.min_length}" if self.min_length == self.max_length
                    else f"{self.min_length} to {self.max_length}")
            plural = "" if self.max_length == 1 else "s"
            raise FieldError(path, f"must hold {size} item{plural}, got {len(value)}")
        items = [self.item.parse(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if self.unique:
            seen: set = set()
            for i, v in enumerate(items):
                key = json.dumps(v, sort_keys=True)
                if key in seen:
                    raise FieldError(f"{path}[{i}]", f"repeats {shown(v)}")
                seen.add(key)
        return items

    def violations(self, valid: Any) -> Iterator[Violation]:
        yield from _wrong_types("list")
        valid = list(valid)
        if self.min_length > 0:
            yield valid[: self.min_length - 1], "too few items"
        extra = self.max_length + 1 - len(valid)
        if not self.unique:
            yield valid + [valid[-1]] * extra, "too many items"
        elif all(isinstance(v, str) for v in valid):
            yield valid + [f"{valid[-1]}{i}" for i in range(extra)], "too many items"
        if self.unique and len(valid) >= 2:
            yield [valid[0], valid[0], *valid[2:]], "a repeated item"
        for bad, why in self.item.violations(valid[0]):
            yield [bad, *valid[1:]], f"item 0: {why}"


@dataclass(frozen=True)
class Member:
    """One key of an object: its spec, whether it must be there, and what it means."""

    spec: Spec
    required: bool = True
    doc: str = ""


@dataclass(frozen=True)
class Object(Spec):
    """A JSON object whose keys are exactly ``members`` (required ones present, no unknown keys: a key this
    aesipe does not know could change how the file must be used)."""

    members: Mapping[str, Member] = field(default_factory=dict)

    def parse(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            raise FieldError(path, f"must be a JSON object, got {shown(value)}")
        unknown = [k for k in value if k not in self.members]
        if unknown:
            raise FieldError(f"{path}.{unknown[0]}", "is not a key this aesipe knows (a newer aesipe's file? "
                                                     "upgrade aesipe)")
        parsed = {}
        for key, member in self.members.items():
            if key in value:
                parsed[key] = member.spec.parse(value[key], f"{path}.{key}")
            elif member.required:
                raise FieldError(f"{path}.{key}", "is missing")
        return parsed

    def violations(self, valid: Any) -> Iterator[Violation]:
        yield from _wrong_types("object")
        for key, member in self.members.items():
            if key not in valid:
                continue
            if member.required:
                yield {k: v for k, v in valid.items() if k != key}, f"{key} missing"
            for bad, why in member.spec.violations(valid[key]):
                yield {**valid, key: bad}, f"{key}: {why}"
        yield {**valid, "unknown_key": 1}, "an unknown key"


__all__ = ["AnyOf", "Boolean", "FieldError", "Integer", "ListOf", "Member", "Nullable", "Number", "Object", "OneOf",
           "Spec", "Text", "Violation", "shown", "text_problem"]
