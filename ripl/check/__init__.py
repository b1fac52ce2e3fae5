"""Parsed modules → a typed, resolved `PolicySet`.

Binds every name (entity types and actions are global; labels, risks,
requirements and obligations are visible where declared or imported), checks
types, expands rule targets to concrete sets of entity types and actions and
folds constants. Every problem becomes a diagnostic with a span and, where we
know one, a hint; all of them are reported together in one `CheckError`.

The checker is built up in stages, one module each: `base` (state, reporting,
visibility) → `schema` → `exprs` → `rules` (rules, tests, options, the run).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import cachetools

from ripl import ir
from ripl.check.base import REASON_CODES, did_you_mean, policy_hash
from ripl.check.rules import Checker
from ripl.check.types import comparable, fold, mismatch_hint, path_pattern
from ripl.modules import LoadedModule

__all__ = [
    "REASON_CODES",
    "Checker",
    "check_modules",
    "comparable",
    "did_you_mean",
    "fold",
    "mismatch_hint",
    "path_pattern",
    "policy_hash",
]

_checked: cachetools.LRUCache[tuple[tuple[str, str, str], ...], ir.PolicySet] = (
    cachetools.LRUCache(16)
)
_checked_lock = threading.Lock()


def check_modules(modules: Sequence[LoadedModule]) -> ir.PolicySet:
    """Raises `CheckError` with every problem found.

    A policy set is immutable, so the same modules (names, files and texts)
    are checked once; reloading an unchanged set costs a lookup."""
    key = tuple(sorted((m.name, m.file, m.text) for m in modules))
    with _checked_lock:
        found = _checked.get(key)
    if found is not None:
        return found
    policy = Checker(modules).run()
    with _checked_lock:
        _checked[key] = policy
    return policy
