"""Value checks for the config sections' ``__post_init__`` (each raises ``FieldError`` naming the field)."""
from __future__ import annotations

from typing import Any

from .loading import FieldError


def at_least(obj: Any, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < minimum:
            raise FieldError(name, f"must be at least {minimum:g}, got {value!r}")


def positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        values = value if isinstance(value, tuple) else (value,)
        if any(v is not None and v <= 0 for v in values):
            raise FieldError(name, f"must be positive, got {value!r}")


def non_empty(obj: Any, *names: str) -> None:
    for name in names:
        if not getattr(obj, name):
            raise FieldError(name, "must list at least one value")


def ordered_range(obj: Any, name: str) -> None:
    low, high = getattr(obj, name)
    if not 0 < low <= high:
        raise FieldError(name, f"must be [low, high] with 0 < low <= high, got {[low, high]}")
