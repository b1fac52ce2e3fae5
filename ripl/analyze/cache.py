"""Solver answers kept by what the rules involved mean, so an unchanged
rule is not solved again: `content_hash` of a rule (its meaning, without
its id, location or annotations), and the cache keyed by such hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import attrs

from ripl import ir


def content_hash(rule: ir.Rule) -> str:
    """What a rule means, without its id, location or annotations."""
    data = canonical(
        (
            rule.effect,
            rule.principal_types,
            rule.actions,
            rule.resource_types,
            rule.condition,
            rule.obligations,
            rule.requirements,
        )
    )
    return hashlib.sha256(repr(data).encode()).hexdigest()


def canonical(value: Any) -> Any:
    if isinstance(value, frozenset | set):
        return ("set", tuple(sorted((canonical(v) for v in value), key=repr)))
    if isinstance(value, tuple | list):
        return tuple(canonical(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, canonical(v)) for k, v in value.items()))
    names = _field_names(type(value))
    if names is not None:
        return (
            type(value).__name__,
            *(canonical(getattr(value, name)) for name in names),
        )
    return repr(value)


_FIELDS: dict[type, tuple[str, ...] | None] = {}


def _field_names(cls: type) -> tuple[str, ...] | None:
    """The fields `canonical` reads of an attrs class (all but the span);
    None for other classes."""
    if cls not in _FIELDS:
        _FIELDS[cls] = (
            tuple(f.name for f in attrs.fields(cls) if f.name != "span")
            if attrs.has(cls)
            else None
        )
    return _FIELDS[cls]


class SolverCache:
    """Answers keyed by the content hashes of the rules a question involves
    and of the schema. Share one across runs to skip unchanged rules."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, ...], Any] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, ...]) -> Any:
        if key in self.answers:
            self.hits += 1
            return self.answers[key]
        self.misses += 1
        return None

    def put(self, key: tuple[str, ...], value: Any) -> None:
        self.answers[key] = value


class CacheView(SolverCache):
    """One chunk's view of a shared cache: reads fall through to the cache
    as it was when the run began, and what the chunk adds stays here until
    the run merges it, so no chunk sees another's answers (see
    `parallel.py`)."""

    def __init__(self, base: SolverCache) -> None:
        super().__init__()
        self.base = base

    def get(self, key: tuple[str, ...]) -> Any:
        found = self.answers.get(key)
        if found is None:
            found = self.base.answers.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found
